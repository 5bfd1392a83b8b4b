// `philox_normal`: the standard normals of one noise stream, as the kernels draw them. For
// tests (CPU vector vs scalar path, CPU vs CUDA) and for users who need the raw noise.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../cpu/normals.h"
#include "checks.h"
#include "noise_args.h"

namespace lorafusion {
namespace {

at::Tensor philox_normal_cpu(const at::Tensor& rng, int64_t stream, int64_t pass_index,
                             int64_t tile, int64_t start, int64_t count, bool vectorized) {
  check_philox_normal_args(rng, stream, pass_index, tile, start, count);
  const int64_t* r = rng.data_ptr<int64_t>();
  const NoiseKey key = make_noise_key(static_cast<uint64_t>(r[0]), static_cast<uint64_t>(r[1]),
                                      static_cast<uint32_t>(stream),
                                      static_cast<uint32_t>(pass_index), static_cast<uint32_t>(tile));
  at::Tensor out = at::empty({count}, rng.options().dtype(at::kFloat));
  if (count == 0) return out;
  const uint64_t first = static_cast<uint64_t>(start);
  float* o = out.data_ptr<float>();
  if (vectorized) {
    // Counter-based: each grain draws its own elements, so the bits do not depend on the
    // number of threads. Grains are whole Philox blocks past the first element.
    constexpr int64_t kGrain = 1 << 14;
    at::parallel_for(0, count, kGrain, [&](int64_t b, int64_t e) {
      cpu::fill_normals(key, first + static_cast<uint64_t>(b), e - b, o + b);
    });
  } else {
    const uint64_t b0 = first >> 2, b1 = (first + static_cast<uint64_t>(count) + 3) >> 2;
    std::vector<float> blocks((b1 - b0) * 4);
    cpu::normals_scalar(key, b0, b1, blocks.data());
    std::copy(blocks.begin() + (first & 3), blocks.begin() + (first & 3) + count, o);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lorafusion, m) {
  m.def(
      "philox_normal(Tensor rng, int stream, int pass_index, int tile, int start, int count, "
      "bool vectorized=True) -> Tensor");
}

TORCH_LIBRARY_IMPL(lorafusion, CPU, m) { m.impl("philox_normal", &philox_normal_cpu); }

}  // namespace lorafusion
