// CUDA registration of philox_normal: the GPU's draws of one noise stream, to compare bit for
// bit with the CPU op (tests/test_cuda.py). `vectorized` selects a CPU code path; the CUDA
// kernel has one path and ignores it.
#include <torch/library.h>

#include "../../cuda/launch.h"
#include "../noise_args.h"
#include "cuda_glue.h"

namespace lorafusion {
namespace {

at::Tensor philox_normal_cuda(const at::Tensor& rng, int64_t stream_id, int64_t pass_index,
                              int64_t tile, int64_t start, int64_t count, bool /*vectorized*/) {
  constexpr const char* op = "lorafusion::philox_normal";
  cuda_glue::cuda_tensor(rng, op, "rng");
  check_philox_normal_args(rng, stream_id, pass_index, tile, start, count);
  const c10::cuda::CUDAGuard guard(rng.device());
  at::Tensor out = at::empty({count}, rng.options().dtype(at::kFloat));
  if (count == 0) return out;
  cuda_glue::check_launch(
      cuda::philox_normal(rng.data_ptr<int64_t>(), static_cast<uint32_t>(stream_id),
                          static_cast<uint32_t>(pass_index), static_cast<uint32_t>(tile),
                          static_cast<uint64_t>(start), count, out.data_ptr<float>(),
                          cuda_glue::current_stream(rng)),
      op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lorafusion, CUDA, m) { m.impl("philox_normal", &philox_normal_cuda); }

}  // namespace lorafusion
