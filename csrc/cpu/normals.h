// Standard normals of a Philox noise stream on the CPU: an AVX2 path that computes eight
// Philox blocks at once with exactly the operations of lorafusion/philox.h (so it gives the
// same bits as the scalar code, and as the CUDA kernels), and the scalar path.
#pragma once
#include <lorafusion/philox.h>

#include <cstdint>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LORAFUSION_AVX2_NORMALS 1
#endif

namespace lorafusion::cpu {

inline void normals_scalar(const NoiseKey& key, uint64_t b0, uint64_t b1, float* out) {
  for (uint64_t b = b0; b < b1; ++b) normal4(noise_block(key, b), out + (b - b0) * 4);
}

#ifdef LORAFUSION_AVX2_NORMALS
namespace avx2 {

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

// Normals of blocks [b, b + 8) into out[0..32) (block-major, as the scalar path).
inline void normals8(const NoiseKey& key, uint64_t b, float* out) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // Block indices b + lane as 64-bit: low words wrap into the high word.
  const uint32_t lo_base = static_cast<uint32_t>(b);
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(lo_base)), lane);
  const __m256i wrapped = _mm256_cmpgt_epi32(
      _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(lo_base)), _mm256_set1_epi32(INT32_MIN)),
      _mm256_xor_si256(c0, _mm256_set1_epi32(INT32_MIN)));  // c0 < lo_base unsigned
  __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(b >> 32)), wrapped);
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(key.c2));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(key.c3));
  uint32_t k0 = key.k0, k1 = key.k1;
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m256i lo0, hi0, lo1, hi1;
    mulhilo(c0, m0, &lo0, &hi0);
    mulhilo(c2, m1, &lo1, &hi1);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m256i v[4] = {c0, c1, c2, c3};
  __m256 res[4];
  const __m256 scale = _mm256_set1_ps(5.9604644775390625e-8f);
  for (int pair = 0; pair < 2; ++pair) {
    const __m256i r1 = _mm256_add_epi32(_mm256_srli_epi32(v[2 * pair], 8), _mm256_set1_epi32(1));
    const __m256 u1 = _mm256_mul_ps(_mm256_cvtepi32_ps(r1), scale);
    const __m256 u2 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v[2 * pair + 1], 8)), scale);
    const __m256 rad = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_unit(u1)));
    __m256 s, c;
    sincos_turns(u2, &s, &c);
    res[2 * pair] = _mm256_mul_ps(rad, c);
    res[2 * pair + 1] = _mm256_mul_ps(rad, s);
  }
  // Lane j holds block b + j: transpose [4][8] into block-major [8][4].
  alignas(32) float tmp[4][8];
  for (int k = 0; k < 4; ++k) _mm256_store_ps(tmp[k], res[k]);
  for (int j = 0; j < 8; ++j)
    for (int k = 0; k < 4; ++k) out[j * 4 + k] = tmp[k][j];
}

}  // namespace avx2
#endif

// Normals of blocks [b0, b1) into out (4 per block), vectorised where the CPU allows.
inline void normals_blocks(const NoiseKey& key, uint64_t b0, uint64_t b1, float* out) {
#ifdef LORAFUSION_AVX2_NORMALS
  uint64_t b = b0;
  for (; b + 8 <= b1; b += 8) avx2::normals8(key, b, out + (b - b0) * 4);
  normals_scalar(key, b, b1, out + (b - b0) * 4);
#else
  normals_scalar(key, b0, b1, out);
#endif
}

// Standard normals for elements [first, first + count) of one noise stream.
inline void fill_normals(const NoiseKey& key, uint64_t first, int64_t count, float* out,
                         std::vector<float>& scratch) {
  const uint64_t b0 = first >> 2, b1 = (first + static_cast<uint64_t>(count) + 3) >> 2;
  scratch.resize((b1 - b0) * 4);
  normals_blocks(key, b0, b1, scratch.data());
  const float* s = scratch.data() + (first & 3);
  for (int64_t i = 0; i < count; ++i) out[i] = s[i];
}

}  // namespace lorafusion::cpu
