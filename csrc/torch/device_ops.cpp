// `pcm_program` / `pcm_drift`: the fused per-weight passes of the PCM-like device model
// (csrc/cpu/pcm_fused.h) as ops, parallel over elements. The converter scale (the one abs-max
// reduction each needs) is computed by the caller (lorafusion_ext.ops.device) with torch's own
// ops, so that it is the plain-PyTorch model's scale bit for bit.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "../cpu/pcm_fused.h"
#include "checks.h"

namespace lorafusion {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per parallel grain (whole chunks of normals)

void check_weights(const at::Tensor& w, const char* op) {
  TORCH_CHECK(w.device().is_cpu(), op, ": weights is on ", w.device(), "; expected a CPU tensor");
  TORCH_CHECK(w.scalar_type() == at::kFloat, op, ": weights has dtype ", w.scalar_type(),
              "; expected float32 (other dtypes take the plain-PyTorch path)");
  checks::dims(w, 2, op, "weights", "[out, in]");
  checks::contiguous(w, op, "weights");
}

void check_common(double scale, double g_max, int64_t seed, const char* op) {
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0, op, ": scale = ", scale,
              "; expected a finite conductance per weight unit > 0");
  TORCH_CHECK(std::isfinite(g_max) && g_max > 0.0, op, ": g_max = ", g_max, "; expected a finite conductance > 0 µS");
  TORCH_CHECK(seed >= 0, op, ": seed = ", seed, "; expected a seed >= 0");
}

void check_scale(double v, const char* op, const char* name) {
  TORCH_CHECK(std::isfinite(v) && v >= 0.0, op, ": ", name, " = ", v, "; expected a finite value >= 0");
}

std::tuple<at::Tensor, at::Tensor> pcm_program_cpu(const at::Tensor& weights, double scale,
                                                   at::ArrayRef<double> coeffs, double g_max,
                                                   double coeff_rescale, double prog_noise_scale,
                                                   double drift_scale, int64_t seed) {
  constexpr const char* op = "lorafusion::pcm_program";
  check_weights(weights, op);
  check_common(scale, g_max, seed, op);
  TORCH_CHECK(!coeffs.empty(), op, ": coeffs is empty; expected at least one coefficient (µS)");
  for (double c : coeffs) TORCH_CHECK(std::isfinite(c), op, ": coeffs holds ", c, "; expected finite coefficients");
  TORCH_CHECK(std::isfinite(coeff_rescale), op, ": coeff_rescale = ", coeff_rescale, "; expected a finite ratio");
  check_scale(prog_noise_scale, op, "prog_noise_scale");
  check_scale(drift_scale, op, "drift_scale");
  std::vector<float> c(coeffs.begin(), coeffs.end());
  cpu::PcmProgramParams p{static_cast<float>(scale), static_cast<float>(g_max), c.data(),
                          static_cast<int>(c.size()), static_cast<float>(coeff_rescale),
                          static_cast<float>(prog_noise_scale), static_cast<float>(drift_scale),
                          static_cast<uint64_t>(seed)};
  at::Tensor programmed = at::empty_like(weights);
  at::Tensor nu = at::empty({2, weights.size(0), weights.size(1)}, weights.options());
  const int64_t n = weights.numel();
  const float* w = weights.data_ptr<float>();
  float* pw = programmed.data_ptr<float>();
  float* nu_p = nu.data_ptr<float>();
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    cpu::pcm_program_range(w, b, e, p, pw, nu_p, nu_p + n);
  });
  return {programmed, nu};
}

at::Tensor pcm_drift_cpu(const at::Tensor& weights, const at::Tensor& nu, double scale, double g_max,
                         double t_ratio, bool apply_power, double read_sigma, double read_noise_scale,
                         int64_t seed) {
  constexpr const char* op = "lorafusion::pcm_drift";
  check_weights(weights, op);
  check_common(scale, g_max, seed, op);
  checks::same_dtype(nu, weights, op, "nu", "weights");
  checks::same_device(nu, weights, op, "nu", "weights");
  checks::dims(nu, 3, op, "nu", "[2, out, in]");
  checks::size(nu, 0, 2, op, "nu", "the pair");
  checks::size(nu, 1, weights.size(0), op, "nu", "out");
  checks::size(nu, 2, weights.size(1), op, "nu", "in");
  checks::contiguous(nu, op, "nu");
  TORCH_CHECK(std::isfinite(t_ratio) && t_ratio >= 1.0, op, ": t_ratio = ", t_ratio,
              "; expected (t + t_0) / t_0 >= 1");
  check_scale(read_sigma, op, "read_sigma");
  check_scale(read_noise_scale, op, "read_noise_scale");
  cpu::PcmDriftParams p{static_cast<float>(scale), static_cast<float>(g_max), static_cast<float>(t_ratio),
                        apply_power, static_cast<float>(read_sigma), static_cast<float>(read_noise_scale),
                        static_cast<uint64_t>(seed)};
  at::Tensor out = at::empty_like(weights);
  const int64_t n = weights.numel();
  const float* w = weights.data_ptr<float>();
  const float* nu_p = nu.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    cpu::pcm_drift_range(w, nu_p, nu_p + n, b, e, p, o);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lorafusion, m) {
  m.def(
      "pcm_program(Tensor weights, float scale, float[] coeffs, float g_max, float coeff_rescale, "
      "float prog_noise_scale, float drift_scale, int seed) -> (Tensor, Tensor)");
  m.def(
      "pcm_drift(Tensor weights, Tensor nu, float scale, float g_max, float t_ratio, bool apply_power, "
      "float read_sigma, float read_noise_scale, int seed) -> Tensor");
}

TORCH_LIBRARY_IMPL(lorafusion, CPU, m) {
  m.impl("pcm_program", &pcm_program_cpu);
  m.impl("pcm_drift", &pcm_drift_cpu);
}

}  // namespace lorafusion
