// Standard normals of a Philox noise stream on the CPU: the scalar path of lorafusion/philox.h
// and the vector paths (AVX-512F: 16 or 32 blocks per step, AVX2: 8 or 16), chosen at compile time for the
// host the extension is built on. Every path gives the same bits (tested through philox_normal).
#pragma once
#include <lorafusion/philox.h>

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#define LORAFUSION_AVX2_NORMALS 1
#include "normals_avx2.h"
#endif
#if defined(LORAFUSION_AVX2_NORMALS) && defined(__AVX512F__)
#define LORAFUSION_AVX512_NORMALS 1
#include "normals_avx512.h"
#endif

namespace lorafusion::cpu {

inline void normals_scalar(const NoiseKey& key, uint64_t b0, uint64_t b1, float* out) {
  for (uint64_t b = b0; b < b1; ++b) normal4(noise_block(key, b), out + (b - b0) * 4);
}

// Normals of blocks [b0, b1) into out (4 per block), vectorised where the CPU allows.
inline void normals_blocks(const NoiseKey& key, uint64_t b0, uint64_t b1, float* out) {
  uint64_t b = b0;
#ifdef LORAFUSION_AVX512_NORMALS
  if (b + 16 <= b1) {
    const avx512::RoundKeys rk = avx512::round_keys(key);
    for (; b + 32 <= b1; b += 32) avx512::normals32(key, rk, b, out + (b - b0) * 4);
    for (; b + 16 <= b1; b += 16) avx512::normals16(key, rk, b, out + (b - b0) * 4);
  }
#endif
#ifdef LORAFUSION_AVX2_NORMALS
  if (b + 8 <= b1) {
    const avx2::RoundKeys rk = avx2::round_keys(key);
    for (; b + 16 <= b1; b += 16) avx2::normals16(key, rk, b, out + (b - b0) * 4);
    for (; b + 8 <= b1; b += 8) avx2::normals8(key, rk, b, out + (b - b0) * 4);
  }
#endif
  normals_scalar(key, b, b1, out + (b - b0) * 4);
}

// Standard normals for elements [first, first + count) of one noise stream. Whole blocks go
// straight into `out`; a partial first or last block is drawn whole and copied in part.
inline void fill_normals(const NoiseKey& key, uint64_t first, int64_t count, float* out) {
  const uint64_t end = first + static_cast<uint64_t>(count < 0 ? 0 : count);
  uint64_t i = first;
  float part[4];
  if ((i & 3) != 0 && i < end) {
    normals_scalar(key, i >> 2, (i >> 2) + 1, part);
    for (; (i & 3) != 0 && i < end; ++i) out[i - first] = part[i & 3];
  }
  const uint64_t whole_end = end & ~uint64_t{3};
  if (whole_end > i) {
    normals_blocks(key, i >> 2, whole_end >> 2, out + (i - first));
    i = whole_end;
  }
  if (i < end) {
    normals_scalar(key, i >> 2, (i >> 2) + 1, part);
    for (; i < end; ++i) out[i - first] = part[i & 3];
  }
}

// Uniforms in [-1/2, 1/2) (24 bits each) for elements [first, first + count) of one stream:
// the offsets of stochastic rounding (AIHWKIT adds uniform_(-0.5, 0.5) before rounding).
inline void fill_uniforms(const NoiseKey& key, uint64_t first, int64_t count, float* out) {
  const uint64_t end = first + static_cast<uint64_t>(count < 0 ? 0 : count);
  for (uint64_t b = first >> 2; (b << 2) < end; ++b) {
    const Philox4 r = noise_block(key, b);
    for (uint64_t q = 0; q < 4; ++q) {
      const uint64_t e = (b << 2) + q;
      if (e >= first && e < end) out[e - first] = static_cast<float>(r.v[q] >> 8) * 5.9604644775390625e-8f - 0.5f;
    }
  }
}

}  // namespace lorafusion::cpu
