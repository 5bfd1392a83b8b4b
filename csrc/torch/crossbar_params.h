// Validation of crossbar_mvm's arguments, shared by the CPU and CUDA registrations so that
// both reject the same inputs with the same messages: the argument prologue of the forward
// and of the backward (crossbar_forward_prologue, crossbar_backward_prologue), each taking
// the registration's device rules.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <lorafusion/params.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "checks.h"

namespace lorafusion {

inline constexpr const char* kCrossbarOp = "lorafusion::crossbar_mvm";

namespace detail {
// One packed value into a field of the struct: ints, enums and bools must be whole numbers.
template <typename F>
void unpack_field(F& field, double v, const char* name) {
  TORCH_CHECK(std::isfinite(v), kCrossbarOp, ": params.", name, " = ", v, "; expected a finite value");
  if constexpr (std::is_same_v<F, double>) {
    field = v;
  } else if constexpr (std::is_same_v<F, bool>) {
    TORCH_CHECK(v == 0.0 || v == 1.0, kCrossbarOp, ": params.", name, " = ", v, "; expected 0 or 1");
    field = v != 0.0;
  } else {
    TORCH_CHECK(v == std::floor(v) && std::abs(v) < 9.0e15, kCrossbarOp, ": params.", name, " = ", v,
                "; expected a whole number");
    field = static_cast<F>(static_cast<int64_t>(v));
  }
}
}  // namespace detail

// The op's `params` (packed in the order of LORAFUSION_CROSSBAR_PARAMS), validated.
inline CrossbarParams make_crossbar_params(c10::ArrayRef<double> packed) {
  TORCH_CHECK(static_cast<int64_t>(packed.size()) == kCrossbarParamCount, kCrossbarOp, ": params has ",
              packed.size(), " values; expected ", kCrossbarParamCount,
              " (lorafusion_ext._C.crossbar_param_names, in that order)");
  CrossbarParams p;
  int64_t i = 0;
#define LORAFUSION_PARAM_UNPACK(type, name, init) detail::unpack_field(p.name, packed[i++], #name);
  LORAFUSION_CROSSBAR_PARAMS(LORAFUSION_PARAM_UNPACK)
#undef LORAFUSION_PARAM_UNPACK
  auto nonneg = [](double v, const char* name) {
    TORCH_CHECK(v >= 0.0, kCrossbarOp, ": ", name, " = ", v, "; expected a finite value >= 0");
  };
  nonneg(p.inp_res, "inp_res");
  nonneg(p.inp_bound, "inp_bound");
  nonneg(p.out_res, "out_res");
  nonneg(p.out_bound, "out_bound");
  nonneg(p.out_noise, "out_noise");
  nonneg(p.nm_thres, "nm_thres");
  nonneg(p.modifier_std, "modifier_std");
  nonneg(p.modifier_mult_std, "modifier_mult_std");
  nonneg(p.inp_noise, "inp_noise");
  nonneg(p.modifier_res, "modifier_res");
  TORCH_CHECK((p.modifier_std > 0.0) + (p.modifier_res > 0.0) + (p.modifier_mult_std > 0.0) <= 1, kCrossbarOp,
              ": modifier_std = ", p.modifier_std, ", modifier_res = ", p.modifier_res, ", modifier_mult_std = ",
              p.modifier_mult_std, "; expected at most one training modifier (AIHWKIT has one modifier.type)");
  TORCH_CHECK(p.modifier_sample_rows >= 0, kCrossbarOp, ": modifier_sample_rows = ", p.modifier_sample_rows,
              "; expected >= 0 (token rows per batch sample; 0: one weight-noise draw per call)");
  TORCH_CHECK(p.modifier_sample_rows == 0 || p.modifier_res == 0.0, kCrossbarOp, ": modifier_sample_rows = ",
              p.modifier_sample_rows, " with modifier_res = ", p.modifier_res,
              "; per-sample weight noise needs ADD_NORMAL or MULT_NORMAL (AIHWKIT cannot discretize per sample)");
  TORCH_CHECK(!p.modifier_sto_round || p.modifier_res > 0.0, kCrossbarOp,
              ": modifier_sto_round needs modifier_res > 0 (stochastic rounding of the DISCRETIZE modifier)");
  TORCH_CHECK(std::isfinite(p.out_scale), kCrossbarOp, ": out_scale = ", p.out_scale, "; expected a finite value");
  nonneg(p.ir_drop, "ir_drop");
  if (p.ir_drop > 0.0) {
    TORCH_CHECK(p.inp_res > 0.0 && p.inp_bound > 0.0, kCrossbarOp,
                ": ir_drop > 0 needs a DAC (inp_res > 0, inp_bound > 0): the input is a pulse of its levels");
    TORCH_CHECK(p.ir_drop_segments >= 1 && p.ir_drop_time_steps >= 2 && p.ir_drop_rows >= 0, kCrossbarOp,
                ": ir_drop_segments = ", p.ir_drop_segments, ", ir_drop_time_steps = ", p.ir_drop_time_steps,
                ", ir_drop_rows = ", p.ir_drop_rows, "; expected >= 1, >= 2 and >= 0");
    TORCH_CHECK(p.ir_drop_rs >= 0.0 && p.ir_drop_adc_frequency >= 0.0 && p.ir_drop_g_min >= 0.0 &&
                    p.ir_drop_g_max > p.ir_drop_g_min,
                kCrossbarOp, ": ir_drop_rs = ", p.ir_drop_rs, ", ir_drop_adc_frequency = ", p.ir_drop_adc_frequency,
                ", ir_drop_g_min = ", p.ir_drop_g_min, ", ir_drop_g_max = ", p.ir_drop_g_max,
                "; expected rs >= 0, frequency >= 0 and 0 <= g_min < g_max");
  }
  TORCH_CHECK(p.inp_res < 1.0 && p.out_res < 1.0, kCrossbarOp, ": inp_res = ", p.inp_res, ", out_res = ",
              p.out_res, "; expected resolutions in [0, 1) (1 / (2^bits - 2))");
  TORCH_CHECK(!(p.inp_res > 0.0 && p.inp_bound <= 0.0), kCrossbarOp,
              ": inp_res > 0 needs inp_bound > 0 (the DAC range)");
  TORCH_CHECK(!(p.out_res > 0.0 && p.out_bound <= 0.0), kCrossbarOp,
              ": out_res > 0 needs out_bound > 0 (the ADC range)");
  if (p.bwd_read) {
    nonneg(p.bwd_inp_res, "bwd_inp_res");
    nonneg(p.bwd_inp_bound, "bwd_inp_bound");
    nonneg(p.bwd_out_res, "bwd_out_res");
    nonneg(p.bwd_out_bound, "bwd_out_bound");
    nonneg(p.bwd_out_noise, "bwd_out_noise");
    nonneg(p.bwd_nm_thres, "bwd_nm_thres");
    TORCH_CHECK(p.bwd_inp_res < 1.0 && p.bwd_out_res < 1.0, kCrossbarOp, ": bwd_inp_res = ", p.bwd_inp_res,
                ", bwd_out_res = ", p.bwd_out_res, "; expected resolutions in [0, 1) (1 / (2^bits - 2))");
    TORCH_CHECK(!(p.bwd_inp_res > 0.0 && p.bwd_inp_bound <= 0.0), kCrossbarOp,
                ": bwd_inp_res > 0 needs bwd_inp_bound > 0 (the backward DAC range)");
    TORCH_CHECK(!(p.bwd_out_res > 0.0 && p.bwd_out_bound <= 0.0), kCrossbarOp,
                ": bwd_out_res > 0 needs bwd_out_bound > 0 (the backward ADC range)");
    const auto bnm = static_cast<int32_t>(p.bwd_noise_management);
    TORCH_CHECK(bnm >= 0 && bnm <= 3, kCrossbarOp, ": bwd_noise_management = ", bnm,
                "; expected 0 (none), 1 (abs_max), 2 (max) or 3 (constant)");
    const auto bbm = static_cast<int32_t>(p.bwd_bound_management);
    TORCH_CHECK(bbm >= 0 && bbm <= 2, kCrossbarOp, ": bwd_bound_management = ", bbm,
                "; expected 0 (none), 1 (iterative_global), 2 (iterative_per_row)");
    TORCH_CHECK(p.bwd_max_passes >= 1 && p.bwd_max_passes <= 32, kCrossbarOp, ": bwd_max_passes = ",
                p.bwd_max_passes, "; expected 1..32");
  }
  const auto nm = static_cast<int32_t>(p.noise_management);
  TORCH_CHECK(nm >= 0 && nm <= 3, kCrossbarOp, ": noise_management = ", nm,
              "; expected 0 (none), 1 (abs_max), 2 (max) or 3 (constant)");
  const auto bm = static_cast<int32_t>(p.bound_management);
  TORCH_CHECK(bm >= 0 && bm <= 2, kCrossbarOp, ": bound_management = ", bm,
              "; expected 0 (none), 1 (iterative_global), 2 (iterative_per_row)");
  TORCH_CHECK(p.max_passes >= 1 && p.max_passes <= 32, kCrossbarOp, ": max_passes = ", p.max_passes,
              "; expected 1..32");
  TORCH_CHECK(p.max_in >= 0 && p.max_out >= 0, kCrossbarOp, ": max_in = ", p.max_in, ", max_out = ",
              p.max_out, "; expected >= 0 (0: one tile)");
  return p;
}

// y's shape: [M, N], or [Tin, M, N] with per_input_tile.
inline std::vector<int64_t> crossbar_output_shape(int64_t M, int64_t K, int64_t N, const CrossbarParams& p) {
  if (p.per_input_tile) return {split_count(K, p.max_in), M, N};
  return {M, N};
}

// grad_y must have y's shape.
inline void check_crossbar_grad_y(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                  const CrossbarParams& p) {
  checks::same_dtype(grad_y, x, kCrossbarOp, "grad_y", "x");
  checks::same_device(grad_y, x, kCrossbarOp, "grad_y", "x");
  const auto expected = crossbar_output_shape(x.size(0), x.size(1), weight.size(0), p);
  TORCH_CHECK(grad_y.sizes() == at::IntArrayRef(expected), kCrossbarOp, ": grad_y has shape ",
              grad_y.sizes(), "; expected the forward output's ", at::IntArrayRef(expected),
              p.per_input_tile ? " [input_tiles, tokens, out_features]" : " [tokens, out_features]");
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
  TORCH_CHECK(p.modifier_sample_rows == 0 || x.size(0) % p.modifier_sample_rows == 0, kCrossbarOp, ": x has ",
              x.size(0), " token rows; expected a multiple of modifier_sample_rows = ", p.modifier_sample_rows,
              " (whole batch samples)");
  const int64_t tin = split_count(weight.size(1), p.max_in);
  if (p.ir_drop > 0.0) {
    // The physical rows hold every input tile (symmetrically zero-padded) in whole segments.
    const int64_t rows = p.ir_drop_rows > 0 ? p.ir_drop_rows : weight.size(1);
    const int64_t tile_rows = (weight.size(1) + tin - 1) / tin;
    TORCH_CHECK(rows >= tile_rows && rows % p.ir_drop_segments == 0, kCrossbarOp, ": ir_drop_rows = ", rows,
                " with input tiles of up to ", tile_rows, " rows and ", p.ir_drop_segments,
                " segments; expected at least the tile's rows and a multiple of the segments");
  }
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

// noise_weight: [out, in] like weight, or [samples, out, in] with per-sample weight noise.
inline void check_crossbar_noise_weight(const std::optional<at::Tensor>& noise_weight, const at::Tensor& x,
                        const at::Tensor& weight, const CrossbarParams& p) {
  if (!noise_weight) return;
  checks::same_dtype(*noise_weight, x, kCrossbarOp, "noise_weight", "x");
  checks::same_device(*noise_weight, x, kCrossbarOp, "noise_weight", "x");
  checks::contiguous(*noise_weight, kCrossbarOp, "noise_weight");
  if (p.modifier_sample_rows > 0) {
    const std::vector<int64_t> expected{x.size(0) / p.modifier_sample_rows, weight.size(0), weight.size(1)};
    TORCH_CHECK(noise_weight->sizes() == at::IntArrayRef(expected), kCrossbarOp, ": noise_weight has shape ",
                noise_weight->sizes(), "; expected [samples, out_features, in_features] = ", at::IntArrayRef(expected),
                " (per-sample weight noise)");
    return;
  }
  TORCH_CHECK(noise_weight->sizes() == weight.sizes(), kCrossbarOp, ": noise_weight has shape ",
              noise_weight->sizes(), "; expected the shape of weight ", weight.sizes());
}

// bias [out_features], not with per_input_tile.
inline void check_crossbar_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x,
                                const at::Tensor& weight, const CrossbarParams& p) {
  if (!bias) return;
  TORCH_CHECK(!p.per_input_tile, kCrossbarOp,
              ": bias must be None with per_input_tile (the input tiles' outputs are not summed)");
  checks::same_dtype(*bias, x, kCrossbarOp, "bias", "x");
  checks::same_device(*bias, x, kCrossbarOp, "bias", "x");
  checks::contiguous(*bias, kCrossbarOp, "bias");
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), kCrossbarOp,
              ": bias has shape ", bias->sizes(), "; expected [", weight.size(0), "]");
}

// noise_out (test-only explicit output noise): [max_passes, input_tiles, tokens, out_features].
inline void check_crossbar_noise_out(const std::optional<at::Tensor>& noise_out, const at::Tensor& x,
                                     const at::Tensor& weight, const CrossbarParams& p) {
  if (!noise_out) return;
  checks::same_dtype(*noise_out, x, kCrossbarOp, "noise_out", "x");
  checks::same_device(*noise_out, x, kCrossbarOp, "noise_out", "x");
  checks::contiguous(*noise_out, kCrossbarOp, "noise_out");
  const std::vector<int64_t> expected{p.max_passes, split_count(weight.size(1), p.max_in), x.size(0),
                                      weight.size(0)};
  TORCH_CHECK(noise_out->sizes() == at::IntArrayRef(expected), kCrossbarOp, ": noise_out has shape ",
              noise_out->sizes(), "; expected [max_passes, input_tiles, tokens, out_features] = ",
              at::IntArrayRef(expected));
}

// The backward's saved forward outputs: scales [tiles, tokens] and the clamp mask, bool
// [input_tiles, tokens, out_features].
inline void check_crossbar_saved(const at::Tensor& scales, const at::Tensor& mask, const at::Tensor& x,
                                 const at::Tensor& weight, const CrossbarParams& p) {
  const int64_t tin = split_count(weight.size(1), p.max_in);
  const int64_t tiles = tin * split_count(weight.size(0), p.max_out);
  checks::same_dtype(scales, x, kCrossbarOp, "scales", "x");
  checks::same_device(scales, x, kCrossbarOp, "scales", "x");
  TORCH_CHECK(scales.dim() == 2 && scales.size(0) == tiles && scales.size(1) == x.size(0), kCrossbarOp,
              ": scales has shape ", scales.sizes(), "; expected [tiles, tokens]");
  checks::same_device(mask, x, kCrossbarOp, "mask", "x");
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 3 && mask.size(0) == tin &&
                  mask.size(1) == x.size(0) && mask.size(2) == weight.size(0),
              kCrossbarOp, ": mask has shape ", mask.sizes(),
              "; expected bool [input_tiles, tokens, out_features] (run forward with need_aux)");
}

// input_range (learned input ranges, fused into the DAC loop): [input_tiles, output_tiles], x's
// dtype and device, contiguous; for calls without gradient only (the gradient path applies the
// ranges outside the op, in AIHWKIT's autograd graph).
inline void check_crossbar_input_range(const std::optional<at::Tensor>& input_range, const at::Tensor& x,
                                       const at::Tensor& weight, const CrossbarParams& p, bool need_aux) {
  if (!input_range) return;
  TORCH_CHECK(!need_aux, kCrossbarOp,
              ": input_range is fused for calls without gradient (need_aux = False); the gradient path "
              "clamps and scales the input outside the op");
  checks::same_dtype(*input_range, x, kCrossbarOp, "input_range", "x");
  checks::same_device(*input_range, x, kCrossbarOp, "input_range", "x");
  checks::contiguous(*input_range, kCrossbarOp, "input_range");
  const std::vector<int64_t> expected{split_count(weight.size(1), p.max_in), split_count(weight.size(0), p.max_out)};
  TORCH_CHECK(input_range->sizes() == at::IntArrayRef(expected), kCrossbarOp, ": input_range has shape ",
              input_range->sizes(), "; expected [input_tiles, output_tiles] = ", at::IntArrayRef(expected));
  TORCH_CHECK(p.ir_drop == 0.0, kCrossbarOp, ": input_range with ir_drop > 0 is not modelled");
}

// A validated call: its params and its sizes (x [M, K], weight [N, K], Tin x Tout tiles).
struct CrossbarCall {
  CrossbarParams p;
  int64_t M, K, N, tin, tout;
};

// The device rules a registration adds to the shared prologue, as static members of `Device`:
//   check_x(x): before the shared checks, that x is on the registration's device;
//   check_call(x, rng, p, training): after the shared input checks, rng's device, the
//     device's size limits and which features its kernel implements.
template <typename Device>
CrossbarCall crossbar_call(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
                           const at::Tensor& rng, c10::ArrayRef<double> params, bool training) {
  CrossbarCall c;
  c.p = make_crossbar_params(params);
  Device::check_x(x);
  check_crossbar_inputs(x, weight, out_scales, rng, c.p);
  Device::check_call(x, rng, c.p, training);
  c.M = x.size(0);
  c.K = x.size(1);
  c.N = weight.size(0);
  c.tin = split_count(c.K, c.p.max_in);
  c.tout = split_count(c.N, c.p.max_out);
  return c;
}

// The forward's argument prologue: params, inputs, the device's rules, bias and the test-only
// noise tensors.
template <typename Device>
CrossbarCall crossbar_forward_prologue(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
                                       const std::optional<at::Tensor>& bias, const at::Tensor& rng,
                                       const std::optional<at::Tensor>& noise_out,
                                       const std::optional<at::Tensor>& noise_weight,
                                       c10::ArrayRef<double> params, bool training) {
  const CrossbarCall c = crossbar_call<Device>(x, weight, out_scales, rng, params, training);
  check_crossbar_bias(bias, x, weight, c.p);
  check_crossbar_noise_out(noise_out, x, weight, c.p);
  check_crossbar_noise_weight(noise_weight, x, weight, c.p);
  return c;
}

// The backward's argument prologue: the forward's inputs and device rules, then grad_y, the
// saved scales and mask, and the test-only weight noise.
template <typename Device>
CrossbarCall crossbar_backward_prologue(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                        const at::Tensor& out_scales, const at::Tensor& rng,
                                        const at::Tensor& scales, const at::Tensor& mask,
                                        const std::optional<at::Tensor>& noise_weight,
                                        c10::ArrayRef<double> params, bool training) {
  const CrossbarCall c = crossbar_call<Device>(x, weight, out_scales, rng, params, training);
  check_crossbar_grad_y(grad_y, x, weight, c.p);
  check_crossbar_saved(scales, mask, x, weight, c.p);
  check_crossbar_noise_weight(noise_weight, x, weight, c.p);
  return c;
}

}  // namespace lorafusion
