// Plain parameter structs of the crossbar kernels (no torch, no CUDA), shared by the
// CPU and CUDA launchers and the torch glue.
#pragma once
#include <cstdint>

namespace lorafusion {

enum class BoundManagement : int32_t { kNone = 0, kIterativeGlobal = 1, kIterativePerRow = 2 };
enum class NoiseManagement : int32_t { kNone = 0, kAbsMax = 1 };

// One crossbar tile's periphery, in normalised units (DESIGN.md section 4).
struct CrossbarParams {
  double inp_res = 0.0;       // DAC step in units of the input range (1/254 for 8 bit); 0: no DAC
  double inp_bound = 1.0;     // DAC clamp; 0: none
  double out_res = 0.0;       // ADC step in units of the output range; 0: no ADC
  double out_bound = 12.0;    // ADC clamp; 0: none
  double out_noise = 0.0;     // additive output noise std
  double nm_thres = 0.0;      // abs-max noise management clamp; 0: none
  double modifier_std = 0.0;  // ADD_NORMAL training modifier std (relative to max|W| of a tile)
  NoiseManagement noise_management = NoiseManagement::kAbsMax;
  BoundManagement bound_management = BoundManagement::kIterativeGlobal;
  int32_t max_passes = 1;  // bound-management passes at most (reduction 1, 2, 4, ...)
  int64_t max_in = 0;      // tile rows (inputs) at most; 0: one tile
  int64_t max_out = 0;     // tile columns (outputs) at most; 0: one tile
};

// Balanced split of `size` into chunks of at most `max_size`, as AIHWKIT's tile array.
inline int64_t split_count(int64_t size, int64_t max_size) {
  if (max_size <= 0 || size <= max_size) return 1;
  return (size + max_size - 1) / max_size;
}
inline int64_t split_start(int64_t size, int64_t count, int64_t index) {
  const int64_t base = size / count, extra = size % count;
  return index * base + (index < extra ? index : extra);
}

}  // namespace lorafusion
