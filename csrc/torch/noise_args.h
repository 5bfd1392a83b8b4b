// Validation of philox_normal's arguments, shared by the CPU and CUDA registrations.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace lorafusion {

inline void check_philox_normal_args(const at::Tensor& rng, int64_t stream, int64_t pass_index,
                                     int64_t tile, int64_t start, int64_t count) {
  constexpr const char* op = "lorafusion::philox_normal";
  TORCH_CHECK(rng.scalar_type() == at::kLong && rng.numel() == 2 && rng.is_contiguous(), op,
              ": rng must be a contiguous int64 tensor of 2 elements (seed, offset)");
  TORCH_CHECK(stream >= 0 && stream < 16, op, ": stream = ", stream, "; expected 0..15");
  TORCH_CHECK(pass_index >= 0 && pass_index < 256, op, ": pass_index = ", pass_index,
              "; expected 0..255");
  TORCH_CHECK(tile >= 0 && tile < (1 << 20), op, ": tile = ", tile, "; expected 0..2^20-1");
  TORCH_CHECK(start >= 0 && count >= 0, op, ": start = ", start, ", count = ", count,
              "; expected both >= 0");
}

}  // namespace lorafusion
