// Philox4x32-10 counter-based RNG and a Box-Muller normal transform, shared by the
// CPU and CUDA kernels so that one (seed, counter) gives the same noise on both.
// Every float operation is written out (explicit fma, no library transcendental)
// so that the result does not depend on the compiler's libm or contraction choices.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LF_HD __host__ __device__ __forceinline__
#else
#define LF_HD inline
#endif

namespace lorafusion {

struct Philox4 {
  uint32_t v[4];
};

LF_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds (Salmon et al., SC'11); the constants are the paper's.
LF_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                            uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, c0, &hi0);
    const uint32_t lo1 = mulhilo32(kM1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

LF_HD float lf_fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

LF_HD float bits_to_float(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof(f));
  return f;
}
LF_HD uint32_t float_to_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof(b));
  return b;
}

// Natural log for u in (0, 1] (Cephes logf polynomial, ~1 ulp); u is never 0 here.
LF_HD float lf_log(float u) {
  uint32_t b = float_to_bits(u);
  int e = static_cast<int>((b >> 23) & 0xFF) - 126;  // u = m * 2^e, m in [0.5, 1)
  float m = bits_to_float((b & 0x007FFFFFu) | 0x3F000000u);
  // Move m to [sqrt(1/2), sqrt(2)) so that the polynomial argument is small.
  const bool small = m < 0.70710678f;
  e = small ? e - 1 : e;
  m = small ? m + m : m;
  const float x = m - 1.0f;
  const float z = x * x;
  float p = 7.0376836292e-2f;
  p = lf_fma(p, x, -1.1514610310e-1f);
  p = lf_fma(p, x, 1.1676998740e-1f);
  p = lf_fma(p, x, -1.2420140846e-1f);
  p = lf_fma(p, x, 1.4249322787e-1f);
  p = lf_fma(p, x, -1.6668057665e-1f);
  p = lf_fma(p, x, 2.0000714765e-1f);
  p = lf_fma(p, x, -2.4999993993e-1f);
  p = lf_fma(p, x, 3.3333331174e-1f);
  float y = x * z * p;
  const float fe = static_cast<float>(e);
  y = lf_fma(fe, -2.12194440e-4f, y);
  y = lf_fma(z, -0.5f, y);
  float r = x + y;
  r = lf_fma(fe, 0.693359375f, r);
  return r;
}

// sin(2*pi*u) and cos(2*pi*u) for u in [0, 1): the reduction is exact in turns.
LF_HD void lf_sincos_turns(float u, float* s, float* c) {
  const float q = static_cast<float>(static_cast<int>(u * 4.0f + 0.5f));  // nearest quarter
  const float t = u - q * 0.25f;                                              // [-1/8, 1/8]
  const float a = t * 6.28318530717958647692f;                               // [-pi/4, pi/4]
  const float z = a * a;
  float ps = -1.9515295891e-4f;
  ps = lf_fma(ps, z, 8.3321608736e-3f);
  ps = lf_fma(ps, z, -1.6666654611e-1f);
  const float sa = lf_fma(ps * z, a, a);
  float pc = 2.443315711809948e-5f;
  pc = lf_fma(pc, z, -1.388731625493765e-3f);
  pc = lf_fma(pc, z, 4.166664568298827e-2f);
  const float ca = lf_fma(pc * z, z, lf_fma(z, -0.5f, 1.0f));
  const int quadrant = static_cast<int>(q) & 3;
  const float sv = (quadrant & 1) ? ca : sa;
  const float cv = (quadrant & 1) ? sa : ca;
  *s = (quadrant & 2) ? -sv : sv;
  *c = ((quadrant + 1) & 2) ? -cv : cv;
}

// Four standard normals from one Philox block (two Box-Muller pairs).
LF_HD void normal4(const Philox4& r, float out[4]) {
#pragma unroll
  for (int pair = 0; pair < 2; ++pair) {
    const float u1 = static_cast<float>((r.v[2 * pair] >> 8) + 1u) * 5.9604644775390625e-8f;
    const float u2 = static_cast<float>(r.v[2 * pair + 1] >> 8) * 5.9604644775390625e-8f;
    const float rad = __builtin_sqrtf(-2.0f * lf_log(u1));
    float s, c;
    lf_sincos_turns(u2, &s, &c);
    out[2 * pair] = rad * c;
    out[2 * pair + 1] = rad * s;
  }
}

// No normal4 output exceeds this in magnitude: u1 >= 2^-24 caps the Box-Muller radius at
// sqrt(-2 lf_log(2^-24)) = 5.76810741 and |sin|, |cos| <= 1 (checked over all 2^24 uniforms by
// tests/cpp/normal_bound.cpp). Kernels use it to decide a bound test without drawing the noise.
constexpr float kNormalMaxAbs = 5.7682f;

// Noise streams: which random quantity a Philox block feeds.
enum NoiseStream : uint32_t {
  kStreamOutput = 0u,
  kStreamWeight = 1u,
  kStreamInput = 2u,
  kStreamInputRound = 3u,   // stochastic rounding of the DAC
  kStreamOutputRound = 4u,  // stochastic rounding of the ADC
  kStreamDevice = 5u,       // device-model noise (programming, drift exponents, read noise):
                            // pass = the draw's purpose, seed = per call, layer and tile
  kStreamBackwardOutput = 6u,  // output noise of the backward read (dx = W^T dy): pass p, tile
                               // index it * Tout + ot, element m * K + k (global input column)
};

// The normal for element `index` of stream (stream, pass, tile) under (seed, offset).
// Blocks of four consecutive elements share one Philox call.
struct NoiseKey {
  uint32_t k0, k1, c2, c3;
};

LF_HD NoiseKey make_noise_key(uint64_t seed, uint64_t offset, uint32_t stream, uint32_t pass,
                              uint32_t tile) {
  NoiseKey key;
  key.k0 = static_cast<uint32_t>(seed);
  key.k1 = static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(offset >> 32);
  key.c2 = (stream << 28) ^ (pass << 20) ^ tile;
  key.c3 = static_cast<uint32_t>(offset);
  return key;
}

LF_HD Philox4 noise_block(const NoiseKey& key, uint64_t block) {
  return philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), key.c2,
                       key.c3, key.k0, key.k1);
}

}  // namespace lorafusion
