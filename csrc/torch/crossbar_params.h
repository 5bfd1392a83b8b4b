// Validation of crossbar_mvm's arguments, shared by the CPU and CUDA registrations so that
// both reject the same inputs with the same messages (each adds its device rules).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <lorafusion/params.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "checks.h"

namespace lorafusion {

inline constexpr const char* kCrossbarOp = "lorafusion::crossbar_mvm";

inline CrossbarParams make_crossbar_params(double inp_res, double inp_bound, double out_res, double out_bound,
                           double out_noise, double nm_thres, double modifier_std,
                           int64_t noise_management, int64_t bound_management,
                           int64_t max_passes, int64_t max_in, int64_t max_out) {
  auto finite_nonneg = [](double v, const char* name) {
    TORCH_CHECK(std::isfinite(v) && v >= 0.0, kCrossbarOp, ": ", name, " = ", v,
                "; expected a finite value >= 0");
  };
  finite_nonneg(inp_res, "inp_res");
  finite_nonneg(inp_bound, "inp_bound");
  finite_nonneg(out_res, "out_res");
  finite_nonneg(out_bound, "out_bound");
  finite_nonneg(out_noise, "out_noise");
  finite_nonneg(nm_thres, "nm_thres");
  finite_nonneg(modifier_std, "modifier_std");
  TORCH_CHECK(inp_res < 1.0 && out_res < 1.0, kCrossbarOp, ": inp_res = ", inp_res, ", out_res = ",
              out_res, "; expected resolutions in [0, 1) (1 / (2^bits - 2))");
  TORCH_CHECK(!(inp_res > 0.0 && inp_bound <= 0.0), kCrossbarOp,
              ": inp_res > 0 needs inp_bound > 0 (the DAC range)");
  TORCH_CHECK(!(out_res > 0.0 && out_bound <= 0.0), kCrossbarOp,
              ": out_res > 0 needs out_bound > 0 (the ADC range)");
  TORCH_CHECK(noise_management == 0 || noise_management == 1, kCrossbarOp, ": noise_management = ",
              noise_management, "; expected 0 (none) or 1 (abs_max)");
  TORCH_CHECK(bound_management >= 0 && bound_management <= 2, kCrossbarOp, ": bound_management = ",
              bound_management, "; expected 0 (none), 1 (iterative_global), 2 (iterative_per_row)");
  TORCH_CHECK(max_passes >= 1 && max_passes <= 32, kCrossbarOp, ": max_passes = ", max_passes,
              "; expected 1..32");
  TORCH_CHECK(max_in >= 0 && max_out >= 0, kCrossbarOp, ": max_in = ", max_in, ", max_out = ", max_out,
              "; expected >= 0 (0: one tile)");
  CrossbarParams p;
  p.inp_res = inp_res;
  p.inp_bound = inp_bound;
  p.out_res = out_res;
  p.out_bound = out_bound;
  p.out_noise = out_noise;
  p.nm_thres = nm_thres;
  p.modifier_std = modifier_std;
  p.noise_management = static_cast<NoiseManagement>(noise_management);
  p.bound_management = static_cast<BoundManagement>(bound_management);
  p.max_passes = static_cast<int32_t>(max_passes);
  p.max_in = max_in;
  p.max_out = max_out;
  return p;
}


// Dtypes, shapes, contiguity and same-device rules of the inputs (not which device).
inline void check_crossbar_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
                  const at::Tensor& rng, const CrossbarParams& p) {
  checks::floating(x, kCrossbarOp, "x");
  checks::dims(x, 2, kCrossbarOp, "x", "[tokens, in_features]");
  TORCH_CHECK(x.size(0) > 0, kCrossbarOp, ": x has an empty batch (shape ", x.sizes(),
              "); expected at least one row");
  checks::contiguous(x, kCrossbarOp, "x");
  checks::dims(weight, 2, kCrossbarOp, "weight", "[out_features, in_features]");
  checks::same_dtype(weight, x, kCrossbarOp, "weight", "x");
  checks::same_device(weight, x, kCrossbarOp, "weight", "x");
  checks::contiguous(weight, kCrossbarOp, "weight");
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0, kCrossbarOp, ": weight has shape ",
              weight.sizes(), "; expected non-empty [out_features, in_features]");
  checks::size(x, 1, weight.size(1), kCrossbarOp, "x", "in_features of weight");
  const int64_t tin = split_count(weight.size(1), p.max_in);
  checks::dims(out_scales, 3, kCrossbarOp, "out_scales", "[n_scales, input_tiles, out_features]");
  checks::same_dtype(out_scales, x, kCrossbarOp, "out_scales", "x");
  checks::same_device(out_scales, x, kCrossbarOp, "out_scales", "x");
  checks::contiguous(out_scales, kCrossbarOp, "out_scales");
  checks::size(out_scales, 1, tin, kCrossbarOp, "out_scales", "input tiles");
  checks::size(out_scales, 2, weight.size(0), kCrossbarOp, "out_scales", "out_features");
  TORCH_CHECK(rng.scalar_type() == at::kLong && rng.numel() == 2 && rng.is_contiguous(), kCrossbarOp,
              ": rng must be a contiguous int64 tensor of 2 elements (seed, offset); got ",
              rng.scalar_type(), " ", rng.sizes());
}

inline void check_crossbar_noise_weight(const std::optional<at::Tensor>& noise_weight, const at::Tensor& x,
                        const at::Tensor& weight) {
  if (!noise_weight) return;
  checks::same_dtype(*noise_weight, x, kCrossbarOp, "noise_weight", "x");
  checks::same_device(*noise_weight, x, kCrossbarOp, "noise_weight", "x");
  checks::contiguous(*noise_weight, kCrossbarOp, "noise_weight");
  TORCH_CHECK(noise_weight->sizes() == weight.sizes(), kCrossbarOp, ": noise_weight has shape ",
              noise_weight->sizes(), "; expected the shape of weight ", weight.sizes());
}


inline void check_crossbar_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x,
                                const at::Tensor& weight) {
  if (!bias) return;
  checks::same_dtype(*bias, x, kCrossbarOp, "bias", "x");
  checks::same_device(*bias, x, kCrossbarOp, "bias", "x");
  checks::contiguous(*bias, kCrossbarOp, "bias");
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), kCrossbarOp,
              ": bias has shape ", bias->sizes(), "; expected [", weight.size(0), "]");
}

}  // namespace lorafusion
