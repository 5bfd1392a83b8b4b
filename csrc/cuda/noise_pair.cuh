// One Box-Muller pair of a Philox block: the body of lorafusion::normal4 (philox.h) for a
// single pair, so that a kernel needing two neighbouring normals pays for one log and one
// sincos instead of two. Every operation is the header's, in the header's order (the explicit
// fma of lf_log / lf_sincos_turns included), so the bits equal normal4's out[2*pair],
// out[2*pair+1]; tests/test_cuda.py checks that against the CPU op philox_normal, whose CUDA
// kernel (noise.cu) is built on this function too.
#pragma once
#include <lorafusion/philox.h>

namespace lorafusion::cuda::detail {

__device__ __forceinline__ void normal_pair(const Philox4& r, int pair, float out[2]) {
  const uint32_t w0 = pair ? r.v[2] : r.v[0];
  const uint32_t w1 = pair ? r.v[3] : r.v[1];
  const float u1 = __fmul_rn(static_cast<float>((w0 >> 8) + 1u), 5.9604644775390625e-8f);
  const float u2 = __fmul_rn(static_cast<float>(w1 >> 8), 5.9604644775390625e-8f);
  const float rad = __fsqrt_rn(__fmul_rn(-2.0f, lf_log(u1)));
  float s, c;
  lf_sincos_turns(u2, &s, &c);
  out[0] = __fmul_rn(rad, c);
  out[1] = __fmul_rn(rad, s);
}

// The standard normal of element e of the stream keyed by `key` (and of e + 1 when `two`):
// elements 4b..4b+3 come from Philox block b, (4b, 4b+1) and (4b+2, 4b+3) from its two pairs.
__device__ __forceinline__ void stream_normals(const NoiseKey& key, uint64_t e, bool two,
                                               float* z0, float* z1) {
  float n[2];
  const uint64_t b = e >> 2;
  const int q = static_cast<int>(e & 3);
  Philox4 r = noise_block(key, b);
  normal_pair(r, q >> 1, n);
  *z0 = (q & 1) ? n[1] : n[0];  // no dynamic index: keeps n in registers
  if (!two) return;
  if ((q & 1) == 0) {
    *z1 = n[1];
    return;
  }
  if (q == 3) r = noise_block(key, b + 1);
  normal_pair(r, q == 3 ? 0 : 1, n);
  *z1 = n[0];
}

}  // namespace lorafusion::cuda::detail
