// Fused per-weight arithmetic of the PCM-like device model (lorafusion_ext.devices.pcm,
// AIHWKIT PCMLikeNoiseModel with the single-pair converter): one pass over a range of weights
// for programming and one for drift, with the device noise drawn from Philox streams inside.
//
// Torch-free: plain pointers and a parameter struct; the caller (csrc/torch/device_ops.cpp)
// splits [0, n) into ranges with at::parallel_for. Every step follows the float32 op order of
// the plain-PyTorch model (pcm.py), including torch's `c / t` == `reciprocal(t) * c` for a
// scalar over a tensor, so the only differences from it are the ulps of log and pow: here
// lf_log (philox.h, ~1 ulp) and pow as exp(e ln x) with a Cephes exp (~1 ulp), branch-free so
// that the loops vectorise, against torch's vectorised Sleef versions.
//
// Noise: purpose p of the call draws element i's normal from the stream
// make_noise_key(seed, 0, kStreamDevice, p, 0) at counter i (philox_normal gives the same
// values), so a result does not depend on how [0, n) is split across threads.
#pragma once
#include <lorafusion/philox.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "normals.h"

namespace lorafusion::cpu {

// Draw purposes of the device models (the `pass` field of the noise key).
enum DevicePurpose : uint32_t {
  kPurposeProgPlus = 0u,   // programming noise of G+
  kPurposeNuPlus = 1u,     // drift exponent of G+
  kPurposeProgMinus = 2u,  // programming noise of G-
  kPurposeNuMinus = 3u,    // drift exponent of G-
  kPurposeReadPlus = 8u,   // read noise of G+ at drift time
  kPurposeReadMinus = 9u,  // read noise of G- at drift time
};

struct PcmProgramParams {
  float scale;            // µS per weight unit (g_max / max(max|W|, 1e-7)), computed by the caller
  float g_max;            // µS
  const float* coeffs;    // programming-noise polynomial, ascending powers of g/g_max (µS)
  int n_coeffs;
  float coeff_rescale;    // g_max / g_max_reference, applied to the polynomial (a float, as torch)
  float prog_noise_scale;
  float drift_scale;
  uint64_t seed;          // the noise key's seed (62 bits)
};

struct PcmDriftParams {
  float scale;            // µS per weight unit, from the programmed weights
  float g_max;
  float t_ratio;          // (t + t_0) / t_0, used only when apply_power
  bool apply_power;       // t + t_0 > t_0
  float read_sigma;       // sqrt(ln((t' + t_read) / (2 t_read))), from numpy as the model does
  float read_noise_scale;
  uint64_t seed;
};

// Elements per chunk of drawn normals (a multiple of 4: whole Philox blocks).
constexpr int64_t kFusedChunk = 256;

inline NoiseKey device_key(uint64_t seed, uint32_t purpose) {
  return make_noise_key(seed, 0, kStreamDevice, purpose, 0);
}

namespace detail {

// exp(x) for float x (Cephes expf: range reduction by ln 2 in two parts, degree-5 polynomial,
// ~1 ulp), branch-free so that the loops below vectorise. x <= -87.3 gives 0.
inline float exp_f(float x) {
  const bool under = x < -87.3f;
  x = x > 88.7f ? 88.7f : (under ? -87.0f : x);
  const float fx = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = lf_fma(fx, -0.693359375f, x);
  r = lf_fma(fx, 2.12194440e-4f, r);
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = lf_fma(y, r, 1.3981999507e-3f);
  y = lf_fma(y, r, 8.3334519073e-3f);
  y = lf_fma(y, r, 4.1665795894e-2f);
  y = lf_fma(y, r, 1.6666665459e-1f);
  y = lf_fma(y, r, 5.0000001201e-1f);
  y = lf_fma(y, z, r) + 1.0f;
  const float scale = bits_to_float(static_cast<uint32_t>(static_cast<int>(fx) + 127) << 23);
  return under ? 0.0f : y * scale;
}

// x^e for x >= 0 as exp(e ln x) (0 for x = 0 and e > 0). lf_log handles every positive normal
// float; a subnormal x gives a wrong but tiny power, which every caller clamps from below.
inline float pow_f(float x, float e) {
  const bool pos = x > 0.0f;
  const float r = exp_f(e * lf_log(pos ? x : 1.0f));  // computed for every lane, then selected
  return pos ? r : 0.0f;
}

}  // namespace detail

// Programming of weights[begin, end): programmed weights and ν (nu_plus, nu_minus). Each chunk
// runs as simple loops over arrays so that the compiler vectorises them.
inline void pcm_program_range(const float* w, int64_t begin, int64_t end, const PcmProgramParams& p,
                              float* programmed, float* nu_plus, float* nu_minus) {
  const NoiseKey keys[4] = {device_key(p.seed, kPurposeProgPlus), device_key(p.seed, kPurposeNuPlus),
                            device_key(p.seed, kPurposeProgMinus), device_key(p.seed, kPurposeNuMinus)};
  alignas(64) float z[4][kFusedChunk];
  alignas(64) float g[2][kFusedChunk], gp[2][kFusedChunk], rel[kFusedChunk], mat[kFusedChunk], sig[kFusedChunk];
  for (int64_t c0 = begin; c0 < end; c0 += kFusedChunk) {
    const int64_t len = std::min(kFusedChunk, end - c0);
    for (int q = 0; q < 4; ++q) fill_normals(keys[q], static_cast<uint64_t>(c0), len, z[q]);
    const float* wc = w + c0;
    for (int64_t j = 0; j < len; ++j) {
      const float s = wc[j] * p.scale;
      g[0][j] = std::min(std::max(s, 0.0f), p.g_max) + 0.0f;
      g[1][j] = std::min(std::max(-s, 0.0f), p.g_max) + 0.0f;
    }
    float* nus[2] = {nu_plus + c0, nu_minus + c0};
    for (int d = 0; d < 2; ++d) {
      const float* gd = g[d];
      const float* zp = z[2 * d];
      const float* zn = z[2 * d + 1];
      // σ_prog: poly_noise_std's order (powers accumulated, not Horner).
      for (int64_t j = 0; j < len; ++j) {
        rel[j] = gd[j] / p.g_max;
        mat[j] = rel[j];
        sig[j] = p.coeffs[0];
      }
      for (int k = 1; k < p.n_coeffs; ++k) {
        const float ck = p.coeffs[k];
        if (k > 1)
          for (int64_t j = 0; j < len; ++j) mat[j] = mat[j] * rel[j];
        for (int64_t j = 0; j < len; ++j) sig[j] = sig[j] + mat[j] * ck;
      }
      float* nu = nus[d];
      for (int64_t j = 0; j < len; ++j) {
        const float sg_prog = sig[j] * p.coeff_rescale;
        const float v = gd[j] + (p.prog_noise_scale * sg_prog) * zp[j];
        gp[d][j] = v < 0.0f ? 0.0f : v;
        float r = std::fabs(rel[j]);
        r = r < 1e-7f ? 1e-7f : r;
        const float lg = lf_log(r);
        float mu = -0.0155f * lg + 0.0244f;
        mu = std::min(std::max(mu, 0.049f), 0.1f);
        float sn = -0.0125f * lg + -0.0059f;
        sn = std::min(std::max(sn, 0.008f), 0.045f);
        const float a = std::fabs(mu + sn * zn[j]);
        nu[j] = (a < 0.0f ? 0.0f : a) * p.drift_scale;
      }
    }
    float* out = programmed + c0;
    for (int64_t j = 0; j < len; ++j) out[j] = ((gp[0][j] - 0.0f) - (gp[1][j] - 0.0f)) / p.scale;
  }
}

// Drift of programmed weights[begin, end) with their ν: the weights read at time t.
inline void pcm_drift_range(const float* w, const float* nu_plus, const float* nu_minus, int64_t begin,
                            int64_t end, const PcmDriftParams& p, float* out) {
  const NoiseKey keys[2] = {device_key(p.seed, kPurposeReadPlus), device_key(p.seed, kPurposeReadMinus)};
  // ln(t'/t_0) of the float ratio, once: (t'/t_0)^(-ν) = exp(-ν ln(t'/t_0)).
  // Without the power law (t = 0) the exponent is 0 and exp_f(-0) == 1 exactly: g * 1 == g.
  const float log_ratio = p.apply_power ? static_cast<float>(std::log(static_cast<double>(p.t_ratio))) : 0.0f;
  alignas(64) float z[2][kFusedChunk], g[2][kFusedChunk], gt[2][kFusedChunk];
  for (int64_t c0 = begin; c0 < end; c0 += kFusedChunk) {
    const int64_t len = std::min(kFusedChunk, end - c0);
    for (int q = 0; q < 2; ++q) fill_normals(keys[q], static_cast<uint64_t>(c0), len, z[q]);
    const float* wc = w + c0;
    for (int64_t j = 0; j < len; ++j) {
      const float s = wc[j] * p.scale;
      g[0][j] = std::min(std::max(s, 0.0f), p.g_max) + 0.0f;
      g[1][j] = std::min(std::max(-s, 0.0f), p.g_max) + 0.0f;
    }
    const float* nus[2] = {nu_plus + c0, nu_minus + c0};
    for (int d = 0; d < 2; ++d) {
      const float* gd = g[d];
      const float* nu = nus[d];
      const float* zd = z[d];
      float* o = gt[d];
      for (int64_t j = 0; j < len; ++j) {
        const float gv = gd[j];
        const float gdr = gv * detail::exp_f(-nu[j] * log_ratio);
        float den = detail::pow_f(std::fabs(gv) / p.g_max, 0.65f);
        den = den < 1e-3f ? 1e-3f : den;
        float qs = (1.0f / den) * 0.0088f;
        qs = qs > 0.2f ? 0.2f : qs;
        const float sgm = qs * p.read_sigma;
        const float gf = gdr + ((std::fabs(gdr) * p.read_noise_scale) * sgm) * zd[j];
        o[j] = gf < 0.0f ? 0.0f : gf;
      }
    }
    float* oc = out + c0;
    for (int64_t j = 0; j < len; ++j) oc[j] = ((gt[0][j] - 0.0f) - (gt[1][j] - 0.0f)) / p.scale;
  }
}

}  // namespace lorafusion::cpu
