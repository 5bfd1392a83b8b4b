// Plain parameter structs of the crossbar kernels (no torch, no CUDA), shared by the
// CPU and CUDA launchers and the torch glue.
#pragma once
#include <cstdint>

namespace lorafusion {

enum class BoundManagement : int32_t { kNone = 0, kIterativeGlobal = 1, kIterativePerRow = 2 };
// AIHWKIT's noise management of the torch tile: the input of row m is scaled by 1/a_m with
// a_m = max|x_m| (kAbsMax) or max x_m (kMax, signed), clamped at nm_thres when > 0, or
// a_m = nm_thres for every row (kConstant; 1 when nm_thres is 0).
enum class NoiseManagement : int32_t { kNone = 0, kAbsMax = 1, kMax = 2, kConstant = 3 };

// The crossbar's parameters, defined once: (C++ type, name, default, what it is). The struct
// below, the op's packed `float[] params` argument (this order) and the names the Python side
// reads (`lorafusion_ext._C.crossbar_param_names`) are all generated from this list, so a new
// parameter is one line here and one entry in `HardwareConfig.op_kwargs`.
// All values are in normalised units (docs/numerics.md).
#define LORAFUSION_CROSSBAR_PARAMS(X)                                                        \
  X(double, inp_res, 0.0)       /* DAC step in units of the input range (1/254: 8 bit); 0: none */ \
  X(double, inp_bound, 1.0)     /* DAC clamp; 0: none */                                   \
  X(double, out_res, 0.0)       /* ADC step in units of the output range; 0: no ADC */      \
  X(double, out_bound, 12.0)    /* ADC clamp; 0: none */                                   \
  X(double, out_noise, 0.0)     /* additive output noise std */                            \
  X(double, nm_thres, 0.0)      /* abs-max noise management clamp; 0: none */              \
  X(double, modifier_std, 0.0)  /* ADD_NORMAL training modifier std (rel. to max|W| of a tile) */ \
  X(NoiseManagement, noise_management, NoiseManagement::kAbsMax)                           \
  X(BoundManagement, bound_management, BoundManagement::kIterativeGlobal)                  \
  X(int32_t, max_passes, 1)     /* bound-management passes at most (reduction 1, 2, 4, ...) */ \
  X(int64_t, max_in, 0)         /* tile rows (inputs) at most; 0: one tile */              \
  X(int64_t, max_out, 0)        /* tile columns (outputs) at most; 0: one tile */          \
  X(bool, per_input_tile, false) /* y is [Tin, M, N]: each input tile's periphery output, not summed */ \
  X(double, inp_asymmetry, 0.0) /* negative DAC outputs scaled by 1 - inp_asymmetry (AIHWKIT) */  \
  X(double, out_asymmetry, 0.0) /* negative GEMM outputs scaled by 1 - out_asymmetry, before noise and ADC */ \
  X(double, modifier_res, 0.0)  /* DISCRETIZE training modifier: step res * 2 max|W_tile|; 0: off */ \
  X(double, modifier_mult_std, 0.0) /* MULT_NORMAL training modifier: W + W * std * N(0,1); 0: off */ \
  X(double, inp_noise, 0.0)     /* input noise std added after the DAC (AIHWKIT forward.inp_noise) */ \
  X(bool, inp_sto_round, false) /* DAC rounds stochastically: rint(v / step + U(-1/2, 1/2)) */ \
  X(bool, out_sto_round, false) /* ADC rounds stochastically, likewise */                   \
  X(int64_t, modifier_sample_rows, 0) /* per_batch_sample: consecutive token rows sharing one weight-noise draw; 0: one draw per call */ \
  X(bool, modifier_sto_round, false) /* DISCRETIZE rounds stochastically: rint(W / step + U(-1/2, 1/2)) */ \
  X(double, ir_drop, 0.0)       /* time-dependent IR drop in inference (AIHWKIT IRDropT forward.ir_drop): wire-resistance scale; 0: off */ \
  X(double, ir_drop_rs, 0.15)   /* wire resistance between neighbouring cells, Ohm */     \
  X(int32_t, ir_drop_segments, 8) /* Thevenin segments per column */                     \
  X(int32_t, ir_drop_time_steps, 128) /* time steps of the PWM input pulse in [0, 1] */   \
  X(int64_t, ir_drop_rows, 0)   /* physical tile rows the input is padded to (symmetric); 0: in_features */ \
  X(double, ir_drop_v_read, 0.4005) /* ADC read voltage, V */                             \
  X(bool, ir_drop_sum, false)   /* integrate the current by summing the steps (else trapz) */ \
  X(double, ir_drop_adc_frequency, 0.0) /* integrated-current quantisation frequency; 0: off */ \
  X(double, ir_drop_g_max, 25.0) /* conductance of max|W_tile|, uS (SinglePairConductanceConverter) */ \
  X(double, ir_drop_g_min, 0.0)  /* conductance of a zero weight, uS */                    \
  X(double, out_scale, 1.0)     /* fixed digital factor on the output after the ADC (AIHWKIT forward.out_scale) */ \
  X(bool, bwd_read, false)      /* backward: dx read through the tile (below); false: ideal straight-through */ \
  X(double, bwd_inp_res, 0.0)   /* backward read's DAC step (of dy); 0: none */            \
  X(double, bwd_inp_bound, 1.0) /* backward read's DAC clamp; 0: none */                   \
  X(double, bwd_out_res, 0.0)   /* backward read's ADC step; 0: none */                    \
  X(double, bwd_out_bound, 12.0) /* backward read's ADC clamp; 0: none */                  \
  X(double, bwd_out_noise, 0.0) /* backward read's output noise std (stream kStreamBackwardOutput) */ \
  X(double, bwd_nm_thres, 0.0)  /* backward read's noise-management threshold */           \
  X(NoiseManagement, bwd_noise_management, NoiseManagement::kAbsMax)                       \
  X(BoundManagement, bwd_bound_management, BoundManagement::kIterativeGlobal)              \
  X(int32_t, bwd_max_passes, 1) /* backward read's bound-management passes at most */

// One crossbar tile's periphery and the call's output layout.
struct CrossbarParams {
#define LORAFUSION_PARAM_FIELD(type, name, init) type name = init;
  LORAFUSION_CROSSBAR_PARAMS(LORAFUSION_PARAM_FIELD)
#undef LORAFUSION_PARAM_FIELD
};

// The parameter names in packing order.
inline constexpr const char* kCrossbarParamNames[] = {
#define LORAFUSION_PARAM_NAME(type, name, init) #name,
    LORAFUSION_CROSSBAR_PARAMS(LORAFUSION_PARAM_NAME)
#undef LORAFUSION_PARAM_NAME
};
inline constexpr int64_t kCrossbarParamCount =
    static_cast<int64_t>(sizeof(kCrossbarParamNames) / sizeof(kCrossbarParamNames[0]));

// The backward read's periphery as the parameters of a forward read (of dy through the
// transposed tile): its converters, output noise and managements; no asymmetry, input noise,
// stochastic rounding, IR drop, modifier or tiling (the caller reads one tile at a time).
inline CrossbarParams backward_read_params(const CrossbarParams& p) {
  CrossbarParams b;
  b.inp_res = p.bwd_inp_res;
  b.inp_bound = p.bwd_inp_bound;
  b.out_res = p.bwd_out_res;
  b.out_bound = p.bwd_out_bound;
  b.out_noise = p.bwd_out_noise;
  b.nm_thres = p.bwd_nm_thres;
  b.noise_management = p.bwd_noise_management;
  b.bound_management = p.bwd_bound_management;
  b.max_passes = p.bwd_max_passes;
  return b;
}

// What the periphery multiplies a row's output by to undo its input scale s_m (AIHWKIT:
// output *= out_scale / scale). ABS_MAX and MAX hold the scale in a tensor, so the quotient is
// taken in T. CONSTANT holds it in a Python float, (1 / nm_thres) / 2^pass, so the quotient is
// 2^pass / (1 / nm_thres) in double, rounded once to T; 2^pass = (1 / nm_thres)_T / s_m exactly.
template <typename T>
inline T back_scale(const CrossbarParams& p, T s_m) {
  if (p.noise_management == NoiseManagement::kConstant && p.nm_thres > 0.0) {
    const T c = static_cast<T>(1.0 / p.nm_thres);
    return static_cast<T>((1.0 / (1.0 / p.nm_thres)) * static_cast<double>(c / s_m));
  }
  return T(1) / s_m;
}

// The output factor of row m after the ADC: AIHWKIT's `output *= out_scale / scale`. Its scale
// is a tensor (noise or bound management) or 1: Tensor.__rtruediv__ gives fl(fl(1/s) * out_scale),
// out_scale rounded to T. CONSTANT's scale is a Python double: the quotient is taken in double
// (2^pass exactly) and rounded once.
template <typename T>
inline T output_factor(const CrossbarParams& p, T s_m) {
  if (p.noise_management == NoiseManagement::kConstant && p.nm_thres > 0.0) {
    const T c = static_cast<T>(1.0 / p.nm_thres);
    return static_cast<T>((p.out_scale / (1.0 / p.nm_thres)) * static_cast<double>(c / s_m));
  }
  const T inv = T(1) / s_m;
  return p.out_scale == 1.0 ? inv : inv * static_cast<T>(p.out_scale);
}

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
