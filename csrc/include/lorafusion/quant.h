// DAC / ADC rounding and clamps of the crossbar MVM, in the exact order of floating-point
// operations that makes the CPU path bit-exact against AIHWKIT's torch tile.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define LF_QHD __host__ __device__ __forceinline__
#else
#define LF_QHD inline
#endif

namespace lorafusion {

template <typename T>
LF_QHD T lf_rint(T v) {
#if defined(__CUDA_ARCH__)
  return rint(v);
#else
  return std::rint(v);  // round half to even under the default rounding mode
#endif
}

template <typename T>
LF_QHD bool lf_isnan(T v) {
  return v != v;
}

// torch.clamp semantics: NaN stays NaN (both comparisons are false for NaN).
template <typename T>
LF_QHD T clamp_nan(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// DAC: v is x * s already; step = 2 * inp_bound * inp_res (0: no quantisation).
template <typename T>
LF_QHD T dac_quantize(T v, T step, T bound) {
  if (step > T(0)) v = lf_rint(v / step) * step;
  return bound > T(0) ? clamp_nan(v, -bound, bound) : v;
}

// STE mask of the DAC: true where the clamp was not active (torch.clamp's gradient).
template <typename T>
LF_QHD bool dac_passes_gradient(T v, T step, T bound) {
  if (step > T(0)) v = lf_rint(v / step) * step;
  return !(bound > T(0)) || (v >= -bound && v <= bound);
}

// ADC rounding, before the clamp (the bound test uses the rounded value).
template <typename T>
LF_QHD T adc_round(T v, T step) {
  return step > T(0) ? lf_rint(v / step) * step : v;
}

}  // namespace lorafusion
