// Standard normals of a Philox noise stream, sixteen Philox blocks at a time with AVX-512F:
// the same lane-wise operations as lorafusion/philox.h (and normals_avx2.h), so the same bits.
// Twice the lanes per instruction and a three-way XOR per Philox half-round make it about
// twice as fast as the AVX2 path where the core runs 512-bit instructions.
#pragma once
#include <immintrin.h>
#include <lorafusion/philox.h>

#include <cstdint>

namespace lorafusion::cpu::avx512 {

inline void mulhilo(__m512i a, __m512i m, __m512i* lo, __m512i* hi) {
  // Two 32x32->64 multiplies (even and odd lanes), their words put back in place by in-lane
  // shuffles: vpmulld (two multiply uops, ten cycles) and 64-bit shifts compete with
  // vpmuludq for the one port that multiplies on Intel cores; shuffles run on another.
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_shuffle_epi32(a, _MM_PERM_DDBB), m);
  // lo: even products' low words in even lanes, odd products' low words moved to odd lanes.
  *lo = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CCAA);
  // hi: even products' high words moved to even lanes, odd products' high words in odd lanes.
  *hi = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_DDBB);
}

inline __m512 log_unit(__m512 u) {
  const __m512i b = _mm512_castps_si512(u);
  __m512i e = _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(b, 23), _mm512_set1_epi32(0xFF)),
                               _mm512_set1_epi32(126));
  __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(b, _mm512_set1_epi32(0x007FFFFF)),
                                                 _mm512_set1_epi32(0x3F000000)));
  const __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(0.70710678f), _CMP_LT_OQ);
  e = _mm512_mask_sub_epi32(e, small, e, _mm512_set1_epi32(1));
  m = _mm512_mask_add_ps(m, small, m, m);
  const __m512 x = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(7.0376836292e-2f);
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.1514610310e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.1676998740e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.2420140846e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.4249322787e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.6668057665e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(2.0000714765e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-2.4999993993e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(3.3333331174e-1f));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(x, z), p);
  const __m512 fe = _mm512_cvtepi32_ps(e);
  y = _mm512_fmadd_ps(fe, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
  __m512 r = _mm512_add_ps(x, y);
  return _mm512_fmadd_ps(fe, _mm512_set1_ps(0.693359375f), r);
}

inline void sincos_turns(__m512 u, __m512* s, __m512* c) {
  const __m512i qi = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(u, _mm512_set1_ps(4.0f)),
                                                       _mm512_set1_ps(0.5f)));
  const __m512 q = _mm512_cvtepi32_ps(qi);
  const __m512 t = _mm512_sub_ps(u, _mm512_mul_ps(q, _mm512_set1_ps(0.25f)));
  const __m512 a = _mm512_mul_ps(t, _mm512_set1_ps(6.28318530717958647692f));
  const __m512 z = _mm512_mul_ps(a, a);
  __m512 ps = _mm512_set1_ps(-1.9515295891e-4f);
  ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(8.3321608736e-3f));
  ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(-1.6666654611e-1f));
  const __m512 sa = _mm512_fmadd_ps(_mm512_mul_ps(ps, z), a, a);
  __m512 pc = _mm512_set1_ps(2.443315711809948e-5f);
  pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(-1.388731625493765e-3f));
  pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(4.166664568298827e-2f));
  const __m512 ca = _mm512_fmadd_ps(_mm512_mul_ps(pc, z), z,
                                    _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), _mm512_set1_ps(1.0f)));
  const __mmask16 odd = _mm512_test_epi32_mask(qi, _mm512_set1_epi32(1));
  const __m512i neg_s = _mm512_slli_epi32(_mm512_and_si512(qi, _mm512_set1_epi32(2)), 30);
  const __m512i neg_c = _mm512_slli_epi32(
      _mm512_and_si512(_mm512_add_epi32(qi, _mm512_set1_epi32(1)), _mm512_set1_epi32(2)), 30);
  const __m512 sv = _mm512_mask_blend_ps(odd, sa, ca);
  const __m512 cv = _mm512_mask_blend_ps(odd, ca, sa);
  *s = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(sv), neg_s));
  *c = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(cv), neg_c));
}

struct RoundKeys {
  __m512i k0[10], k1[10], lo1, hi1;
};

inline RoundKeys round_keys(const NoiseKey& key) {
  RoundKeys r;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int i = 0; i < 10; ++i) {
    r.k0[i] = _mm512_set1_epi32(static_cast<int>(k0));
    r.k1[i] = _mm512_set1_epi32(static_cast<int>(k1));
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  uint32_t hi;
  const uint32_t lo = mulhilo32(0xCD9E8D57u, key.c2, &hi);
  r.lo1 = _mm512_set1_epi32(static_cast<int>(lo));
  r.hi1 = _mm512_set1_epi32(static_cast<int>(hi));
  return r;
}

// Philox4x32-10 state of blocks [b, b + 16), one block per lane.
struct Philox16 {
  __m512i c0, c1, c2, c3;

  Philox16(const NoiseKey& key, const RoundKeys& rk, uint64_t b) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i base = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(b)));
    c0 = _mm512_add_epi32(base, lane);
    const __mmask16 wrapped = _mm512_cmplt_epu32_mask(c0, base);
    c1 = _mm512_mask_add_epi32(_mm512_set1_epi32(static_cast<int>(b >> 32)), wrapped,
                               _mm512_set1_epi32(static_cast<int>(b >> 32)), _mm512_set1_epi32(1));
    c3 = _mm512_set1_epi32(static_cast<int>(key.c3));
    // Round 0: c2 is the key's constant word, so its product is precomputed (rk.lo1, rk.hi1).
    __m512i lo0, hi0;
    mulhilo(c0, _mm512_set1_epi32(static_cast<int>(0xD2511F53u)), &lo0, &hi0);
    c0 = _mm512_ternarylogic_epi32(rk.hi1, c1, rk.k0[0], 0x96);
    c2 = _mm512_ternarylogic_epi32(hi0, c3, rk.k1[0], 0x96);
    c1 = rk.lo1;
    c3 = lo0;
  }

  void round(const RoundKeys& rk, int r) {
    __m512i lo0, hi0, lo1, hi1;
    mulhilo(c0, _mm512_set1_epi32(static_cast<int>(0xD2511F53u)), &lo0, &hi0);
    mulhilo(c2, _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u)), &lo1, &hi1);
    c0 = _mm512_ternarylogic_epi32(hi1, c1, rk.k0[r], 0x96);
    c2 = _mm512_ternarylogic_epi32(hi0, c3, rk.k1[r], 0x96);
    c1 = lo1;
    c3 = lo0;
  }
};

// Box-Muller of a Philox state's 4 words per lane into out[0..64), block-major.
inline void box_muller16(const Philox16& st, float* out) {
  const __m512i v[4] = {st.c0, st.c1, st.c2, st.c3};
  __m512 res[4];
  const __m512 scale = _mm512_set1_ps(5.9604644775390625e-8f);
  for (int pair = 0; pair < 2; ++pair) {
    const __m512i r1 = _mm512_add_epi32(_mm512_srli_epi32(v[2 * pair], 8), _mm512_set1_epi32(1));
    const __m512 u1 = _mm512_mul_ps(_mm512_cvtepi32_ps(r1), scale);
    const __m512 u2 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v[2 * pair + 1], 8)), scale);
    const __m512 rad = _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), log_unit(u1)));
    __m512 s, c;
    sincos_turns(u2, &s, &c);
    res[2 * pair] = _mm512_mul_ps(rad, c);
    res[2 * pair + 1] = _mm512_mul_ps(rad, s);
  }
  // [4][16] -> block-major [16][4].
  const __m512 t0 = _mm512_unpacklo_ps(res[0], res[1]), t1 = _mm512_unpackhi_ps(res[0], res[1]);
  const __m512 t2 = _mm512_unpacklo_ps(res[2], res[3]), t3 = _mm512_unpackhi_ps(res[2], res[3]);
  // per 128-bit lane L: u0 = blocks 4L, u1 = 4L+1, u2 = 4L+2, u3 = 4L+3
  const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE);
  const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE);
  // out block-major: 128-bit chunk j = block j; block 4L+i lives in u_i lane L.
  const __m512 a01 = _mm512_shuffle_f32x4(u0, u1, 0x44);  // u0.L0 u0.L1 u1.L0 u1.L1 = b0 b4 b1 b5
  const __m512 a23 = _mm512_shuffle_f32x4(u2, u3, 0x44);  // b2 b6 b3 b7
  const __m512 c01 = _mm512_shuffle_f32x4(u0, u1, 0xEE);  // b8 b12 b9 b13
  const __m512 c23 = _mm512_shuffle_f32x4(u2, u3, 0xEE);  // b10 b14 b11 b15
  // b0 b1 b2 b3 = a01.0 a01.2 a23.0 a23.2 ; b4..b7 = a01.1 a01.3 a23.1 a23.3
  _mm512_storeu_ps(out, _mm512_shuffle_f32x4(a01, a23, 0x88));
  _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(a01, a23, 0xDD));
  _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(c01, c23, 0x88));
  _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(c01, c23, 0xDD));
}

// Normals of blocks [b, b + 16) into out[0..64), block-major.
inline void normals16(const NoiseKey& key, const RoundKeys& rk, uint64_t b, float* out) {
  Philox16 st(key, rk, b);
  for (int r = 1; r < 10; ++r) st.round(rk, r);
  box_muller16(st, out);
}

// Normals of blocks [b, b + 32) into out[0..128): two independent groups of 16 whose Philox
// rounds are interleaved, so that one group's multiplies run while the other's wait on
// theirs (ten dependent rounds bound a single group by latency, not throughput).
inline void normals32(const NoiseKey& key, const RoundKeys& rk, uint64_t b, float* out) {
  Philox16 a(key, rk, b), c(key, rk, b + 16);
  for (int r = 1; r < 10; ++r) {
    a.round(rk, r);
    c.round(rk, r);
  }
  box_muller16(a, out);
  box_muller16(c, out + 64);
}
}  // namespace lorafusion::cpu::avx512
