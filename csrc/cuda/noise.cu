// `philox_normal` on the GPU: the normals of one noise stream exactly as the crossbar kernels
// draw them (detail::stream_normals, the epilogue's own path), so tests can compare them bit
// for bit with the CPU op of the same name.
#include <lorafusion/philox.h>

#include "common.cuh"
#include "launch.h"
#include "noise_pair.cuh"

namespace lorafusion::cuda {
namespace {

// Thread i writes elements start + 2i and start + 2i + 1: the pairing the epilogue uses when
// a row starts at an odd element, so both code paths of stream_normals are exercised.
__global__ void philox_normal_kernel(const int64_t* __restrict__ rng, uint32_t stream_id,
                                     uint32_t pass_index, uint32_t tile, uint64_t start,
                                     int64_t count, float* __restrict__ out) {
  const NoiseKey key = make_noise_key(static_cast<uint64_t>(rng[0]), static_cast<uint64_t>(rng[1]),
                                      stream_id, pass_index, tile);
  const int64_t pairs = (count + 1) / 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = 2 * i;
    const bool two = j + 1 < count;
    float z0, z1 = 0.f;
    detail::stream_normals(key, start + static_cast<uint64_t>(j), two, &z0, &z1);
    out[j] = z0;
    if (two) out[j + 1] = z1;
  }
}

}  // namespace

cudaError_t philox_normal(const int64_t* rng, uint32_t stream_id, uint32_t pass_index,
                          uint32_t tile, uint64_t start, int64_t count, float* out,
                          cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const int64_t pairs = (count + 1) / 2;
  philox_normal_kernel<<<detail::grid_cap(detail::ceil_div(pairs, 256), 65535), 256, 0, stream>>>(
      rng, stream_id, pass_index, tile, start, count, out);
  return cudaGetLastError();
}

}  // namespace lorafusion::cuda
