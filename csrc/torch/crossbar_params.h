// Validation of the crossbar_mvm scalar arguments into CrossbarParams, shared by the CPU and
// CUDA registrations so that both reject the same values with the same messages.
#pragma once
#include <c10/util/Exception.h>
#include <lorafusion/params.h>

#include <cmath>
#include <cstdint>

namespace lorafusion {

inline CrossbarParams make_crossbar_params(double inp_res, double inp_bound, double out_res, double out_bound,
                           double out_noise, double nm_thres, double modifier_std,
                           int64_t noise_management, int64_t bound_management,
                           int64_t max_passes, int64_t max_in, int64_t max_out) {
  auto finite_nonneg = [](double v, const char* name) {
    TORCH_CHECK(std::isfinite(v) && v >= 0.0, "lorafusion::crossbar_mvm", ": ", name, " = ", v,
                "; expected a finite value >= 0");
  };
  finite_nonneg(inp_res, "inp_res");
  finite_nonneg(inp_bound, "inp_bound");
  finite_nonneg(out_res, "out_res");
  finite_nonneg(out_bound, "out_bound");
  finite_nonneg(out_noise, "out_noise");
  finite_nonneg(nm_thres, "nm_thres");
  finite_nonneg(modifier_std, "modifier_std");
  TORCH_CHECK(inp_res < 1.0 && out_res < 1.0, "lorafusion::crossbar_mvm", ": inp_res = ", inp_res, ", out_res = ",
              out_res, "; expected resolutions in [0, 1) (1 / (2^bits - 2))");
  TORCH_CHECK(!(inp_res > 0.0 && inp_bound <= 0.0), "lorafusion::crossbar_mvm",
              ": inp_res > 0 needs inp_bound > 0 (the DAC range)");
  TORCH_CHECK(!(out_res > 0.0 && out_bound <= 0.0), "lorafusion::crossbar_mvm",
              ": out_res > 0 needs out_bound > 0 (the ADC range)");
  TORCH_CHECK(noise_management == 0 || noise_management == 1, "lorafusion::crossbar_mvm", ": noise_management = ",
              noise_management, "; expected 0 (none) or 1 (abs_max)");
  TORCH_CHECK(bound_management >= 0 && bound_management <= 2, "lorafusion::crossbar_mvm", ": bound_management = ",
              bound_management, "; expected 0 (none), 1 (iterative_global), 2 (iterative_per_row)");
  TORCH_CHECK(max_passes >= 1 && max_passes <= 32, "lorafusion::crossbar_mvm", ": max_passes = ", max_passes,
              "; expected 1..32");
  TORCH_CHECK(max_in >= 0 && max_out >= 0, "lorafusion::crossbar_mvm", ": max_in = ", max_in, ", max_out = ", max_out,
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

}  // namespace lorafusion
