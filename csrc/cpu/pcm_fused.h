// Fused per-weight arithmetic of the PCM-like device model (lorafusion_ext.devices.pcm,
// AIHWKIT PCMLikeNoiseModel with the single-pair converter): one pass over a range of weights
// for programming and one for drift, with the device noise drawn from Philox streams inside.
//
// Torch-free: plain pointers and a parameter struct; the caller (csrc/torch/device_ops.cpp)
// splits [0, n) into ranges with at::parallel_for. Every step follows the float32 op order of
// the plain-PyTorch model (pcm.py), including torch's `c / t` == `reciprocal(t) * c` for a
// scalar over a tensor, so the only differences from it are the ulps of log and pow
// (torch's vectorised Sleef versions against the C library's here).
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

// σ_prog(g) in µS before prog_noise_scale: poly_noise_std's order (powers accumulated, not Horner).
inline float prog_sigma(float g, const PcmProgramParams& p) {
  const float rel = g / p.g_max;
  float mat = 1.0f, sig = p.coeffs[0];
  for (int k = 1; k < p.n_coeffs; ++k) {
    mat = (k == 1) ? rel : mat * rel;
    sig = sig + mat * p.coeffs[k];
  }
  return sig * p.coeff_rescale;
}

// One device: programmed conductance (µS) and drift exponent from target g and normals zp, zn.
inline void program_device(float g, float zp, float zn, const PcmProgramParams& p, float* g_prog,
                           float* nu) {
  const float sig = prog_sigma(g, p);
  const float gp = g + (p.prog_noise_scale * sig) * zp;
  *g_prog = gp < 0.0f ? 0.0f : gp;
  float rel = std::fabs(g / p.g_max);
  rel = rel < 1e-7f ? 1e-7f : rel;
  const float lg = std::log(rel);
  float mu = -0.0155f * lg + 0.0244f;
  mu = std::min(std::max(mu, 0.049f), 0.1f);
  float sg = -0.0125f * lg + -0.0059f;
  sg = std::min(std::max(sg, 0.008f), 0.045f);
  float v = std::fabs(mu + sg * zn);
  v = v < 0.0f ? 0.0f : v;
  *nu = v * p.drift_scale;
}

inline float drift_device(float g, float nu, float z, const PcmDriftParams& p) {
  const float gd = p.apply_power ? g * std::pow(p.t_ratio, -nu) : g;
  float den = std::pow(std::fabs(g) / p.g_max, 0.65f);
  den = den < 1e-3f ? 1e-3f : den;
  float qs = (1.0f / den) * 0.0088f;
  qs = qs > 0.2f ? 0.2f : qs;
  const float sig = qs * p.read_sigma;
  const float gf = gd + ((std::fabs(gd) * p.read_noise_scale) * sig) * z;
  return gf < 0.0f ? 0.0f : gf;
}

}  // namespace detail

// Programming of weights[begin, end): programmed weights and ν (nu_plus, nu_minus).
inline void pcm_program_range(const float* w, int64_t begin, int64_t end, const PcmProgramParams& p,
                              float* programmed, float* nu_plus, float* nu_minus) {
  const NoiseKey kpp = device_key(p.seed, kPurposeProgPlus), knp = device_key(p.seed, kPurposeNuPlus);
  const NoiseKey kpm = device_key(p.seed, kPurposeProgMinus), knm = device_key(p.seed, kPurposeNuMinus);
  alignas(64) float zpp[kFusedChunk], znp[kFusedChunk], zpm[kFusedChunk], znm[kFusedChunk];
  for (int64_t c0 = begin; c0 < end; c0 += kFusedChunk) {
    const int64_t len = std::min(kFusedChunk, end - c0);
    fill_normals(kpp, static_cast<uint64_t>(c0), len, zpp);
    fill_normals(knp, static_cast<uint64_t>(c0), len, znp);
    fill_normals(kpm, static_cast<uint64_t>(c0), len, zpm);
    fill_normals(knm, static_cast<uint64_t>(c0), len, znm);
    for (int64_t j = 0; j < len; ++j) {
      const int64_t i = c0 + j;
      const float s = w[i] * p.scale;
      const float gpl = std::min(std::max(s, 0.0f), p.g_max) + 0.0f;
      const float gmi = std::min(std::max(-s, 0.0f), p.g_max) + 0.0f;
      float gp_plus, gp_minus;
      detail::program_device(gpl, zpp[j], znp[j], p, &gp_plus, &nu_plus[i]);
      detail::program_device(gmi, zpm[j], znm[j], p, &gp_minus, &nu_minus[i]);
      programmed[i] = ((gp_plus - 0.0f) - (gp_minus - 0.0f)) / p.scale;
    }
  }
}

// Drift of programmed weights[begin, end) with their ν: the weights read at time t.
inline void pcm_drift_range(const float* w, const float* nu_plus, const float* nu_minus, int64_t begin,
                            int64_t end, const PcmDriftParams& p, float* out) {
  const NoiseKey krp = device_key(p.seed, kPurposeReadPlus), krm = device_key(p.seed, kPurposeReadMinus);
  alignas(64) float zp[kFusedChunk], zm[kFusedChunk];
  for (int64_t c0 = begin; c0 < end; c0 += kFusedChunk) {
    const int64_t len = std::min(kFusedChunk, end - c0);
    fill_normals(krp, static_cast<uint64_t>(c0), len, zp);
    fill_normals(krm, static_cast<uint64_t>(c0), len, zm);
    for (int64_t j = 0; j < len; ++j) {
      const int64_t i = c0 + j;
      const float s = w[i] * p.scale;
      const float gpl = std::min(std::max(s, 0.0f), p.g_max) + 0.0f;
      const float gmi = std::min(std::max(-s, 0.0f), p.g_max) + 0.0f;
      const float tp = detail::drift_device(gpl, nu_plus[i], zp[j], p);
      const float tm = detail::drift_device(gmi, nu_minus[i], zm[j], p);
      out[i] = ((tp - 0.0f) - (tm - 0.0f)) / p.scale;
    }
  }
}

}  // namespace lorafusion::cpu
