// Standard normals of a Philox noise stream, eight Philox blocks at a time with AVX2: exactly
// the operations of lorafusion/philox.h lane by lane (IEEE add/mul/fma/sqrt and exact integer
// ops), so the bits equal the scalar code's and the CUDA kernels'.
#pragma once
#include <immintrin.h>
#include <lorafusion/philox.h>

#include <cstdint>

namespace lorafusion::cpu::avx2 {

// Both halves from the two 32x32->64 products: the low words come from them too rather than
// from vpmulld, which costs 2 uops and 10 cycles on Intel and is slower still on AMD Zen 1.
inline void mulhilo(__m256i a, __m256i m, __m256i* lo, __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

inline __m256 log_unit(__m256 u) {  // lf_log, lane-wise
  const __m256i b = _mm256_castps_si256(u);
  __m256i e = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(0xFF)),
                               _mm256_set1_epi32(126));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x007FFFFF)),
                                                 _mm256_set1_epi32(0x3F000000)));
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.70710678f), _CMP_LT_OQ);
  e = _mm256_add_epi32(e, _mm256_castps_si256(small));  // small lanes are -1
  m = _mm256_blendv_ps(m, _mm256_add_ps(m, m), small);
  const __m256 x = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-1.1514610310e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.1676998740e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-1.2420140846e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.4249322787e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-1.6668057665e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(2.0000714765e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-2.4999993993e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(x, z), p);
  const __m256 fe = _mm256_cvtepi32_ps(e);
  y = _mm256_fmadd_ps(fe, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), y);
  __m256 r = _mm256_add_ps(x, y);
  return _mm256_fmadd_ps(fe, _mm256_set1_ps(0.693359375f), r);
}

inline void sincos_turns(__m256 u, __m256* s, __m256* c) {  // lf_sincos_turns, lane-wise
  const __m256i qi = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(u, _mm256_set1_ps(4.0f)),
                                                       _mm256_set1_ps(0.5f)));
  const __m256 q = _mm256_cvtepi32_ps(qi);
  const __m256 t = _mm256_sub_ps(u, _mm256_mul_ps(q, _mm256_set1_ps(0.25f)));
  const __m256 a = _mm256_mul_ps(t, _mm256_set1_ps(6.28318530717958647692f));
  const __m256 z = _mm256_mul_ps(a, a);
  __m256 ps = _mm256_set1_ps(-1.9515295891e-4f);
  ps = _mm256_fmadd_ps(ps, z, _mm256_set1_ps(8.3321608736e-3f));
  ps = _mm256_fmadd_ps(ps, z, _mm256_set1_ps(-1.6666654611e-1f));
  const __m256 sa = _mm256_fmadd_ps(_mm256_mul_ps(ps, z), a, a);
  __m256 pc = _mm256_set1_ps(2.443315711809948e-5f);
  pc = _mm256_fmadd_ps(pc, z, _mm256_set1_ps(-1.388731625493765e-3f));
  pc = _mm256_fmadd_ps(pc, z, _mm256_set1_ps(4.166664568298827e-2f));
  const __m256 ca = _mm256_fmadd_ps(_mm256_mul_ps(pc, z), z,
                                    _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), _mm256_set1_ps(1.0f)));
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  const __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(qi, one), one));
  const __m256 neg_s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(qi, two), 30));
  const __m256 neg_c =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(qi, one), two), 30));
  const __m256 sv = _mm256_blendv_ps(sa, ca, odd);
  const __m256 cv = _mm256_blendv_ps(ca, sa, odd);
  *s = _mm256_xor_ps(sv, neg_s);  // (q & 2) << 30 is the sign bit
  *c = _mm256_xor_ps(cv, neg_c);
}

// Round keys of one noise key, broadcast once per call rather than once per round.
struct RoundKeys {
  __m256i k0[10], k1[10], lo1, hi1;  // lo1/hi1: the first round's c2 product (c2 is per key)
};

inline RoundKeys round_keys(const NoiseKey& key) {
  RoundKeys r;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int i = 0; i < 10; ++i) {
    r.k0[i] = _mm256_set1_epi32(static_cast<int>(k0));
    r.k1[i] = _mm256_set1_epi32(static_cast<int>(k1));
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  uint32_t hi;
  const uint32_t lo = mulhilo32(0xCD9E8D57u, key.c2, &hi);
  r.lo1 = _mm256_set1_epi32(static_cast<int>(lo));
  r.hi1 = _mm256_set1_epi32(static_cast<int>(hi));
  return r;
}

// Normals of blocks [b, b + 8G) into out[0..32G), block-major as the scalar path: G groups of
// 8 blocks, one block per lane, interleaved step by step. The log and sincos polynomials are
// chains of dependent FMAs; G = 2 gives the core two chains to overlap (about 20 % faster on
// Zen 1 than one group at a time). Each lane's operations are those of philox.h, in its order.
template <int G>
inline void normals_groups(const NoiseKey& key, const RoundKeys& rk, uint64_t b, float* out) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  __m256i c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) {
    const uint64_t bg = b + 8 * static_cast<uint64_t>(g);
    const uint32_t lo_base = static_cast<uint32_t>(bg);
    const __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(lo_base)), lane);
    // A lane whose low counter word wrapped carries into the high word.
    const __m256i wrapped = _mm256_cmpgt_epi32(
        _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(lo_base)), _mm256_set1_epi32(INT32_MIN)),
        _mm256_xor_si256(x0, _mm256_set1_epi32(INT32_MIN)));
    const __m256i x1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(bg >> 32)), wrapped);
    const __m256i x3 = _mm256_set1_epi32(static_cast<int>(key.c3));
    __m256i lo0, hi0;
    mulhilo(x0, m0, &lo0, &hi0);
    c0[g] = _mm256_xor_si256(_mm256_xor_si256(rk.hi1, x1), rk.k0[0]);
    c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), rk.k1[0]);
    c1[g] = rk.lo1;
    c3[g] = lo0;
  }
  for (int round = 1; round < 10; ++round) {
    for (int g = 0; g < G; ++g) {
      __m256i lo0, hi0, lo1, hi1;
      mulhilo(c0[g], m0, &lo0, &hi0);
      mulhilo(c2[g], m1, &lo1, &hi1);
      c0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[g]), rk.k0[round]);
      c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[g]), rk.k1[round]);
      c1[g] = lo1;
      c3[g] = lo0;
    }
  }
  const __m256 scale = _mm256_set1_ps(5.9604644775390625e-8f);
  __m256 u1[2 * G], u2[2 * G], lg[2 * G], s[2 * G], c[2 * G];
  for (int g = 0; g < G; ++g) {
    const __m256i v[4] = {c0[g], c1[g], c2[g], c3[g]};
    for (int pair = 0; pair < 2; ++pair) {
      const __m256i r1 = _mm256_add_epi32(_mm256_srli_epi32(v[2 * pair], 8), _mm256_set1_epi32(1));
      u1[2 * g + pair] = _mm256_mul_ps(_mm256_cvtepi32_ps(r1), scale);
      u2[2 * g + pair] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v[2 * pair + 1], 8)), scale);
    }
  }
  for (int i = 0; i < 2 * G; ++i) lg[i] = log_unit(u1[i]);
  for (int i = 0; i < 2 * G; ++i) sincos_turns(u2[i], &s[i], &c[i]);
  for (int g = 0; g < G; ++g) {
    __m256 res[4];
    for (int pair = 0; pair < 2; ++pair) {
      const int i = 2 * g + pair;
      const __m256 rad = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), lg[i]));
      res[2 * pair] = _mm256_mul_ps(rad, c[i]);
      res[2 * pair + 1] = _mm256_mul_ps(rad, s[i]);
    }
    // Lane j holds block b + 8g + j: transpose [4][8] into block-major [8][4] in registers.
    float* o = out + 32 * g;
    const __m256 t0 = _mm256_unpacklo_ps(res[0], res[1]), t1 = _mm256_unpackhi_ps(res[0], res[1]);
    const __m256 t2 = _mm256_unpacklo_ps(res[2], res[3]), t3 = _mm256_unpackhi_ps(res[2], res[3]);
    const __m256 a0 = _mm256_shuffle_ps(t0, t2, 0x44), a1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 a2 = _mm256_shuffle_ps(t1, t3, 0x44), a3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm256_storeu_ps(o, _mm256_permute2f128_ps(a0, a1, 0x20));
    _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(a2, a3, 0x20));
    _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(a0, a1, 0x31));
    _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(a2, a3, 0x31));
  }
}

inline void normals8(const NoiseKey& key, const RoundKeys& rk, uint64_t b, float* out) {
  normals_groups<1>(key, rk, b, out);
}
inline void normals16(const NoiseKey& key, const RoundKeys& rk, uint64_t b, float* out) {
  normals_groups<2>(key, rk, b, out);
}

}  // namespace lorafusion::cpu::avx2
