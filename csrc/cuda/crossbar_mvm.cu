// CUDA crossbar MVM (docs/numerics.md, "The crossbar MVM"): the CPU kernel's algorithm (csrc/cpu/crossbar_mvm.cpp)
// with the same floating-point operations outside the GEMM, so that one seed gives the same
// noise on both devices and outputs that differ only by the GEMM's summation order.
//
// Per crossbar tile (input tile it, output tile ot; tiles run in the CPU's order):
//   absmax_kernel      a_m = max|x_m| (abs-max noise management), inv_a = fl(1/a), any-nonzero flag
//                      (x with a learned input range: clamp(x, -|r|, |r|) / r here and below)
//   tile_begin_kernel  device state: row count of pass 0 (M, or 0 for an all-zero input)
//   per pass p < max_passes (launched unconditionally; a finished tile has row count 0 and
//   every kernel of a later pass returns at once, so nothing waits on the host):
//     quantize_kernel  s_m = inv_a / 2^p, xq = DAC(x * s_m) for the pending rows (compacted)
//     GEMM + epilogue  y = xq W̃ᵀ, + σ N(0,1) (Philox: element m*N+n of (output, p, it)), ADC,
//                      bound test (row flags), clamp, periphery (and bias with one input tile)
//     select_kernel    global: all rows again if any row failed and p is not the last pass;
//                      per-row: compact the failing rows into the next pass's row list.
//   zero_tile_kernel   an all-zero input gives exact zeros (+ bias), as AIHWKIT
//   accumulate_kernel  several input tiles: y += the tile's periphery output, in tile order
#include <lorafusion/params.h>
#include <lorafusion/philox.h>
#include <lorafusion/quant.h>

#include <limits>

#include "common.cuh"
#include "launch.h"
#include "noise_pair.cuh"

namespace lorafusion::cuda {
namespace {

using detail::add_rn;
using detail::Carver;
using detail::ceil_div;
using detail::div_rn;
using detail::GemmShape;
using detail::grid_cap;
using detail::mul_rn;
using detail::round_up;

struct TileState {
  int count;        // rows pending in this pass (0: the tile is finished)
  int bad;          // global bound management: some row failed the bound test
  int any_nonzero;  // abs-max: some input row of the tile is not all zero
  int pad;
};

struct TileGeom {
  int64_t k0, k1, o0, o1, it, index;
  __host__ __device__ int64_t kt() const { return k1 - k0; }
  __host__ __device__ int64_t nt() const { return o1 - o0; }
};

TileGeom tile_geom(int64_t K, int64_t N, const CrossbarParams& p, int64_t it, int64_t ot) {
  const int64_t tin = split_count(K, p.max_in), tout = split_count(N, p.max_out);
  return {split_start(K, tin, it), split_start(K, tin, it + 1), split_start(N, tout, ot),
          split_start(N, tout, ot + 1), it, it * tout + ot};
}

// The largest tile extents (the balanced split puts the larger chunks first).
int64_t max_chunk(int64_t size, int64_t max_size) {
  const int64_t c = split_count(size, max_size);
  return ceil_div(size, c);
}

// ---------------------------------------------------------------- |W| max for the modifier
// Non-negative floats order like their bit patterns, NaN above +inf: one atomicMax on the
// bits is an order-independent (deterministic) max that propagates NaN as torch's max does.
template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using U = unsigned int;
  __device__ static U of(float v) { return __float_as_uint(v); }
  __device__ static float from(U b) { return __uint_as_float(b); }
};
template <>
struct Bits<double> {
  using U = unsigned long long;
  __device__ static U of(double v) { return static_cast<U>(__double_as_longlong(v)); }
  __device__ static double from(U b) { return __longlong_as_double(static_cast<long long>(b)); }
};

template <typename T>
__global__ void tile_absmax_kernel(const T* __restrict__ w, int64_t K, TileGeom t,
                                   unsigned long long* __restrict__ out) {
  using B = Bits<T>;
  typename B::U best = 0;
  const int64_t total = t.nt() * t.kt();
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e / t.kt(), k = e % t.kt();
    const typename B::U b = B::of(fabs(w[(t.o0 + o) * K + t.k0 + k]));
    best = b > best ? b : best;
  }
  for (int off = 16; off > 0; off >>= 1) {
    const typename B::U other = __shfl_down_sync(0xffffffffu, best, off);
    best = other > best ? other : best;
  }
  if ((threadIdx.x & 31) == 0) {
    atomicMax(reinterpret_cast<typename B::U*>(out), best);
  }
}

// W̃ = W_tile (+ std * max|W_tile| * N(0,1) when training with ADD_NORMAL) into a padded
// [nt, ld] buffer (zeros in [kt, ld)). One thread per Philox block of the row's elements
// go*K + k0 .. go*K + k1 of stream (weight, 0, 0): the CPU's tile_weight, four at a time.
template <typename T>
__global__ void prep_weight_kernel(const T* __restrict__ w, int64_t K, TileGeom t,
                                   const T* __restrict__ noise_weight,
                                   const int64_t* __restrict__ rng,
                                   const unsigned long long* __restrict__ wmax_bits, T std_,
                                   bool modify, T* __restrict__ dst, int64_t ld) {
  const int64_t kt = t.kt();
  const int64_t blocks_per_row = ceil_div(ld, 4) + 1;  // a row may start mid-block
  NoiseKey key{};
  T amp = T(0);
  if (modify) {
    key = make_noise_key(static_cast<uint64_t>(rng[0]), static_cast<uint64_t>(rng[1]),
                         kStreamWeight, 0, 0);
    const typename Bits<T>::U b = static_cast<typename Bits<T>::U>(*wmax_bits);
    amp = mul_rn(std_, Bits<T>::from(b));  // AIHWKIT: (std * max|W|), rounded in T
  }
  for (int64_t o = blockIdx.y; o < t.nt(); o += gridDim.y) {
    const int64_t go = t.o0 + o;
    const uint64_t first = static_cast<uint64_t>(go) * K + t.k0;
    const uint64_t b0 = first >> 2;
    for (int64_t bi = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; bi < blocks_per_row;
         bi += int64_t(gridDim.x) * blockDim.x) {
      const uint64_t b = b0 + bi;
      float z[4] = {0.f, 0.f, 0.f, 0.f};
      const bool draw = modify && noise_weight == nullptr;
      if (draw) normal4(noise_block(key, b), z);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t e = static_cast<int64_t>(b * 4 + q) - static_cast<int64_t>(first);
        if (e < 0 || e >= ld) continue;
        T v = T(0);
        if (e < kt) {
          v = w[go * K + t.k0 + e];
          if (modify) {
            const T n = noise_weight ? noise_weight[go * K + t.k0 + e] : static_cast<T>(z[q]);
            v = add_rn(v, mul_rn(amp, n));
          }
        }
        dst[o * ld + e] = v;
      }
    }
  }
}

// ---------------------------------------------------------------- learned input ranges
// The tile's input with its learned range r (AIHWKIT's pre_forward, the CPU's
// TileForward::tile_input): clamp(x, -|r|, |r|) / r, a true division; x itself without ranges.
struct RangedInput {
  template <typename T>
  __device__ __forceinline__ T operator()(T v, const T* __restrict__ ranges, int64_t index) const {
    if (ranges == nullptr) return v;
    const T r = ranges[index];
    const T b = fabs(r);
    return div_rn(clamp_nan<T>(v, -b, b), r);
  }
};

// ---------------------------------------------------------------- abs-max noise management
// With learned ranges (`ranges` [Tin, Tout], else null) the max is taken over the ranged input.
template <typename T>
__global__ void absmax_kernel(const T* __restrict__ x, int64_t M, int64_t K, TileGeom t,
                              bool abs_max, bool signed_max, T nm_thres, T* __restrict__ inv_a,
                              TileState* __restrict__ state, const T* __restrict__ ranges) {
  const RangedInput ranged;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  bool nz = false;
  for (int64_t m = blockIdx.x * int64_t(blockDim.x / 32) + warp; m < M; m += warps) {
    if (!abs_max) {
      if (lane == 0) inv_a[m] = T(1);
      continue;
    }
    const T* row = x + m * K + t.k0;
    // MAX noise management takes the signed maximum (a row of negatives has a < 0).
    T best = signed_max ? -detail::infinity<T>() : T(0);
    bool nan = false;
    for (int64_t k = lane; k < t.kt(); k += 32) {
      const T xk = ranged(row[k], ranges, t.index);
      const T v = signed_max ? xk : fabs(xk);
      nan |= v != v;
      best = v > best ? v : best;
    }
    for (int off = 16; off > 0; off >>= 1) best = fmax(best, __shfl_xor_sync(0xffffffffu, best, off));
    nan = __any_sync(0xffffffffu, nan);
    if (lane == 0) {
      T a = nan ? detail::quiet_nan<T>() : best;
      if (nm_thres > T(0) && a > nm_thres) a = nm_thres;
      nz |= !(a == T(0));
      if (a <= T(0)) a = T(1);  // a zero row is not rescaled
      inv_a[m] = div_rn(T(1), a);
    }
  }
  if (nz) state->any_nonzero = 1;
}

template <typename T>
__global__ void tile_begin_kernel(TileState* state, int64_t M, bool abs_max) {
  // An all-zero tile input takes no pass at all (zero_tile_kernel writes its outputs).
  state->count = (abs_max && !state->any_nonzero) ? 0 : static_cast<int>(M);
  state->bad = 0;
}

// ---------------------------------------------------------------- one pass
template <typename T>
__global__ void quantize_kernel(const T* __restrict__ x, int64_t K, TileGeom t,
                                const T* __restrict__ inv_a, const int* __restrict__ rows,
                                const TileState* __restrict__ state, T reduction, bool scaling,
                                T step, T bound, int pass, T* __restrict__ xq, int64_t ldq,
                                T* __restrict__ s_tile, int32_t* __restrict__ passes_tile,
                                int* __restrict__ row_bad, const T* __restrict__ ranges) {
  const RangedInput ranged;
  const int64_t count = state->count;
  for (int64_t i = blockIdx.y; i < count; i += gridDim.y) {
    const int64_t m = rows ? rows[i] : i;
    const T sm = div_rn(inv_a[m], reduction);  // AIHWKIT: (1 / a) / reduction, both rounded
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      s_tile[m] = sm;
      passes_tile[m] = pass + 1;
      row_bad[m] = 0;
    }
    const T* xr = x + m * K + t.k0;
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < ldq;
         k += int64_t(gridDim.x) * blockDim.x) {
      T q = T(0);  // the padding columns stay zero (the TF32 loader reads them)
      if (k < t.kt()) {
        const T xk = ranged(xr[k], ranges, t.index);
        q = dac_quantize<T>(scaling ? mul_rn(xk, sm) : xk, step, bound);
      }
      xq[i * ldq + k] = q;
    }
  }
}

// The fused epilogue of one pass: noise, ADC, bound test, clamp, periphery.
template <typename T>
struct ForwardEpilogue {
  const int* rows;  // compacted pending rows of this pass, or null (identity)
  int64_t M, N, o0, it, tin, pass;
  T sigma, step, bound;
  const T* noise_out;     // injected noise or null
  const int64_t* rng;
  const T* s_tile;        // [M]
  const T* out_scales;    // [S, Tin, N]
  int64_t n_scales;
  const T* bias;          // with one input tile only
  bool* mask;             // [Tin, M, N] or null
  T* out;                 // y (one input tile) or the [M, N] tile buffer
  int* row_bad;
  TileState* state;

  __device__ __forceinline__ bool element(int64_t m, int64_t col, T v, T noise, T inv_s) const {
    if (sigma > T(0)) v = add_rn(v, mul_rn(sigma, noise));
    v = adc_round<T>(v, step);
    const bool inside = v <= bound && v >= -bound;  // tested after rounding, before the clamp
    if (mask) mask[(it * M + m) * N + col] = inside;
    v = clamp_nan<T>(v, -bound, bound);
    v = mul_rn(v, inv_s);
    for (int64_t j = 0; j < n_scales; ++j) v = mul_rn(v, out_scales[(j * tin + it) * N + col]);
    if (bias) v = add_rn(v, bias[col]);
    out[m * N + col] = v;
    return !inside;
  }

  __device__ __forceinline__ bool pair(int64_t i, int64_t j, T v0, T v1, bool has1) const {
    const int64_t m = rows ? rows[i] : i;
    const int64_t col = o0 + j;
    T n0 = T(0), n1 = T(0);
    if (sigma > T(0)) {
      if (noise_out) {
        const T* nz = noise_out + ((pass * tin + it) * M + m) * N + col;
        n0 = nz[0];
        if (has1) n1 = nz[1];
      } else {
        const NoiseKey key =
            make_noise_key(static_cast<uint64_t>(rng[0]), static_cast<uint64_t>(rng[1]),
                           kStreamOutput, static_cast<uint32_t>(pass), static_cast<uint32_t>(it));
        float z0 = 0.f, z1 = 0.f;
        detail::stream_normals(key, static_cast<uint64_t>(m) * N + col, has1, &z0, &z1);
        n0 = static_cast<T>(z0);
        n1 = static_cast<T>(z1);
      }
    }
    const T inv_s = div_rn(T(1), s_tile[m]);
    bool bad = element(m, col, v0, n0, inv_s);
    if (has1) bad |= element(m, col + 1, v1, n1, inv_s);
    return bad;
  }

  __device__ __forceinline__ void flag_row(int64_t i) const {
    const int64_t m = rows ? rows[i] : i;
    row_bad[m] = 1;  // benign race: every writer stores 1
    state->bad = 1;
  }
};

// After pass `pass`: decide which rows run again. One block; the per-row compaction keeps
// the rows in order (a block-wide ballot scan), so a run is reproducible launch to launch.
__global__ void select_kernel(TileState* state, const int* __restrict__ rows_in,
                              int* __restrict__ rows_out, const int* __restrict__ row_bad,
                              int mode, bool last) {
  __shared__ int warp_base[32];
  __shared__ int total;
  const int count = state->count;
  if (count == 0) return;
  if (mode != static_cast<int>(BoundManagement::kIterativePerRow)) {
    if (threadIdx.x == 0) {
      const bool again = mode == static_cast<int>(BoundManagement::kIterativeGlobal) &&
                         state->bad && !last;
      state->count = again ? count : 0;  // global: the whole batch re-runs
      state->bad = 0;
    }
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  int base = 0;
  for (int start = 0; start < count; start += blockDim.x) {
    const int i = start + threadIdx.x;
    int m = 0;
    bool keep = false;
    if (i < count) {
      m = rows_in ? rows_in[i] : i;
      keep = row_bad[m] != 0 && !last;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) warp_base[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
      int acc = 0;
      for (int w = 0; w < nwarps; ++w) {
        const int c = warp_base[w];
        warp_base[w] = acc;
        acc += c;
      }
      total = acc;
    }
    __syncthreads();
    if (keep) rows_out[base + warp_base[warp] + __popc(ballot & ((1u << lane) - 1u))] = m;
    base += total;
    __syncthreads();  // warp_base and total are rewritten by the next chunk
  }
  if (threadIdx.x == 0) {
    state->count = base;
    state->bad = 0;
  }
}

// ---------------------------------------------------------------- after the passes
template <typename T>
__global__ void zero_tile_kernel(const TileState* __restrict__ state, bool abs_max, int64_t M,
                                 int64_t N, TileGeom t, bool direct, const T* __restrict__ bias,
                                 T* __restrict__ y, T* __restrict__ s_tile,
                                 int32_t* __restrict__ passes_tile, bool* __restrict__ mask) {
  if (!abs_max || state->any_nonzero) return;
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      s_tile[m] = T(1);
      passes_tile[m] = 1;
    }
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < t.nt();
         n += int64_t(gridDim.x) * blockDim.x) {
      const int64_t col = t.o0 + n;
      if (direct) y[m * N + col] = bias ? bias[col] : T(0);
      if (mask) mask[(t.it * M + m) * N + col] = false;
    }
  }
}

// y is the tile's own [M, N] block with per_input_tile (zeroed, so 0 + v is v, as on the CPU).
template <typename T>
__global__ void accumulate_kernel(const TileState* __restrict__ state, bool abs_max, int64_t M,
                                  int64_t N, TileGeom t, const T* __restrict__ ybuf,
                                  T* __restrict__ y) {
  if (abs_max && !state->any_nonzero) return;  // the CPU adds nothing for an all-zero tile
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < t.nt();
         n += int64_t(gridDim.x) * blockDim.x) {
      const int64_t e = m * N + t.o0 + n;
      y[e] = add_rn(y[e], ybuf[e]);
    }
  }
}

template <typename T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t M,
                                int64_t N) {
  const int64_t total = M * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    y[e] = add_rn(y[e], bias[e % N]);
}

dim3 rows_grid(int64_t cols, int64_t rows, int threads) {
  return dim3(static_cast<unsigned>(grid_cap(ceil_div(cols, threads), 1024)),
              static_cast<unsigned>(grid_cap(rows)));
}

struct ForwardLayout {
  int64_t ldq, max_kt, max_nt;
};

template <typename T>
struct ForwardBuffers {
  T* inv_a;
  T* xq;
  T* wt;
  T* ybuf;
  int* rows[2];
  int* row_bad;
  TileState* state;
  unsigned long long* wmax;
};

ForwardLayout forward_layout(int64_t K, int64_t N, const CrossbarParams& p) {
  const int64_t max_kt = max_chunk(K, p.max_in), max_nt = max_chunk(N, p.max_out);
  return {round_up(max_kt, 4), max_kt, max_nt};
}

template <typename T>
ForwardBuffers<T> carve_forward(Carver& c, int64_t M, int64_t K, int64_t N,
                                const CrossbarParams& p) {
  const ForwardLayout l = forward_layout(K, N, p);
  const int64_t tin = split_count(K, p.max_in);
  ForwardBuffers<T> b{};
  b.inv_a = c.take<T>(M);
  b.xq = c.take<T>(M * l.ldq);
  b.wt = c.take<T>(l.max_nt * l.ldq);
  b.ybuf = tin > 1 ? c.take<T>(M * N) : nullptr;
  b.rows[0] = c.take<int>(M);
  b.rows[1] = c.take<int>(M);
  b.row_bad = c.take<int>(M);
  b.state = c.take<TileState>(1);
  b.wmax = c.take<unsigned long long>(1);
  return b;
}

// W̃ of tile t into dst [nt, ld] (modifier noise when training with ADD_NORMAL).
template <typename T>
cudaError_t prepare_weight(const T* weight, int64_t K, const TileGeom& t,
                           const CrossbarParams& p, bool training, const int64_t* rng,
                           const T* noise_weight, unsigned long long* wmax, T* dst, int64_t ld,
                           cudaStream_t stream) {
  const bool modify = training && p.modifier_std > 0.0;
  if (modify) {
    LF_CUDA_TRY(cudaMemsetAsync(wmax, 0, sizeof(*wmax), stream));
    tile_absmax_kernel<T><<<grid_cap(ceil_div(t.nt() * t.kt(), 256), 1024), 256, 0, stream>>>(
        weight, K, t, wmax);
    LF_CUDA_TRY(cudaGetLastError());
  }
  const int64_t blocks_per_row = ceil_div(ld, 4) + 1;
  prep_weight_kernel<T><<<rows_grid(blocks_per_row, t.nt(), 128), 128, 0, stream>>>(
      weight, K, t, noise_weight, rng, wmax, static_cast<T>(p.modifier_std), modify, dst, ld);
  return cudaGetLastError();
}

}  // namespace

size_t crossbar_forward_workspace_bytes(int64_t M, int64_t K, int64_t N, const CrossbarParams& p,
                                        size_t elem_size) {
  Carver c{nullptr};
  if (elem_size == sizeof(double)) {
    carve_forward<double>(c, M, K, N, p);
  } else {
    carve_forward<float>(c, M, K, N, p);
  }
  return c.used;
}

template <typename T>
cudaError_t crossbar_forward(const CrossbarForwardArgs<T>& a, const CrossbarParams& p,
                             bool training, bool allow_tf32, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream) {
  const int64_t M = a.M, K = a.K, N = a.N;
  if (M <= 0 || K <= 0 || N <= 0) return cudaSuccess;
  if (M > INT32_MAX) return cudaErrorInvalidValue;  // row lists are int32
  if (workspace_bytes < crossbar_forward_workspace_bytes(M, K, N, p, sizeof(T)))
    return cudaErrorInvalidValue;
  Carver c{static_cast<char*>(workspace)};
  const ForwardBuffers<T> b = carve_forward<T>(c, M, K, N, p);
  const ForwardLayout l = forward_layout(K, N, p);
  const int64_t tin = split_count(K, p.max_in), tout = split_count(N, p.max_out);
  const bool direct = tin == 1;
  // abs_max: a data-dependent input scale (ABS_MAX or MAX), with AIHWKIT's all-zero shortcut.
  const bool abs_max = p.noise_management == NoiseManagement::kAbsMax ||
                       p.noise_management == NoiseManagement::kMax;
  const bool signed_max = p.noise_management == NoiseManagement::kMax;
  const bool scaling = p.noise_management != NoiseManagement::kNone ||
                       p.bound_management != BoundManagement::kNone;
  const int max_passes = p.bound_management == BoundManagement::kNone ? 1 : p.max_passes;
  const T dac_step = static_cast<T>(2.0 * p.inp_bound * p.inp_res);
  const T dac_bound = static_cast<T>(p.inp_bound);
  const T adc_step = static_cast<T>(2.0 * p.out_bound * p.out_res);
  // bound == inf when out_bound == 0 (no ADC clamp): computed on the host as the CPU does.
  const T adc_bound =
      p.out_bound > 0 ? static_cast<T>(p.out_bound) : std::numeric_limits<T>::infinity();
  const int64_t y_blocks = p.per_input_tile ? tin : 1;  // per_input_tile: y is [Tin, M, N]
  if (!direct) LF_CUDA_TRY(cudaMemsetAsync(a.y, 0, sizeof(T) * y_blocks * M * N, stream));

  for (int64_t it = 0; it < tin; ++it) {
    for (int64_t ot = 0; ot < tout; ++ot) {
      const TileGeom t = tile_geom(K, N, p, it, ot);
      T* s_tile = a.s + t.index * M;
      int32_t* passes_tile = a.passes + t.index * M;
      LF_CUDA_TRY(prepare_weight<T>(a.weight, K, t, p, training, a.rng, a.noise_weight, b.wmax,
                                    b.wt, l.ldq, stream));
      LF_CUDA_TRY(cudaMemsetAsync(b.state, 0, sizeof(TileState), stream));
      absmax_kernel<T><<<grid_cap(ceil_div(M, 8), 4096), 256, 0, stream>>>(
          a.x, M, K, t, abs_max, signed_max, static_cast<T>(p.nm_thres), b.inv_a, b.state, a.input_range);
      LF_CUDA_TRY(cudaGetLastError());
      tile_begin_kernel<T><<<1, 1, 0, stream>>>(b.state, M, abs_max);
      LF_CUDA_TRY(cudaGetLastError());
      T reduction = T(1);
      for (int pass = 0; pass < max_passes; ++pass, reduction = reduction * T(2)) {
        const int* rows_in = pass == 0 ? nullptr : b.rows[(pass - 1) % 2];
        quantize_kernel<T><<<rows_grid(l.ldq, M, 256), 256, 0, stream>>>(
            a.x, K, t, b.inv_a, rows_in, b.state, reduction, scaling, dac_step, dac_bound, pass,
            b.xq, l.ldq, s_tile, passes_tile, b.row_bad, a.input_range);
        LF_CUDA_TRY(cudaGetLastError());
        ForwardEpilogue<T> epi{rows_in,      M,          N,           t.o0,
                               t.it,         tin,        pass,        static_cast<T>(p.out_noise),
                               adc_step,     adc_bound,  a.noise_out, a.rng,
                               s_tile,       a.out_scales, a.n_scales, direct ? a.bias : nullptr,
                               a.mask,       direct ? a.y : b.ybuf, b.row_bad, b.state};
        const GemmShape shape{M, &b.state->count, t.nt(), l.ldq, l.ldq, l.ldq};
        LF_CUDA_TRY(detail::launch_gemm_nt<T>(b.xq, b.wt, shape, M, allow_tf32, epi, stream));
        select_kernel<<<1, 1024, 0, stream>>>(b.state, rows_in, b.rows[pass % 2], b.row_bad,
                                              static_cast<int>(p.bound_management),
                                              pass + 1 == max_passes);
        LF_CUDA_TRY(cudaGetLastError());
      }
      zero_tile_kernel<T><<<rows_grid(t.nt(), M, 256), 256, 0, stream>>>(
          b.state, abs_max, M, N, t, direct, a.bias, a.y, s_tile, passes_tile, a.mask);
      LF_CUDA_TRY(cudaGetLastError());
      if (!direct) {
        T* y_block = a.y + (p.per_input_tile ? it * M * N : 0);
        accumulate_kernel<T><<<rows_grid(t.nt(), M, 256), 256, 0, stream>>>(b.state, abs_max, M,
                                                                             N, t, b.ybuf, y_block);
        LF_CUDA_TRY(cudaGetLastError());
      }
    }
  }
  if (!direct && a.bias) {
    add_bias_kernel<T><<<grid_cap(ceil_div(M * N, 256), 8192), 256, 0, stream>>>(a.y, a.bias, M,
                                                                                 N);
    LF_CUDA_TRY(cudaGetLastError());
  }
  return cudaSuccess;
}

// ================================================================ backward
namespace {

// G = dL/dy * (ADC clamp inactive) * periphery scales, for tile t, into g [M, ldn].
template <typename T>
__global__ void grad_out_kernel(const T* __restrict__ gy, const bool* __restrict__ mask,
                                const T* __restrict__ out_scales, int64_t n_scales, int64_t tin,
                                int64_t M, int64_t N, TileGeom t, T* __restrict__ g,
                                int64_t ldn) {
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < ldn;
         n += int64_t(gridDim.x) * blockDim.x) {
      T v = T(0);
      if (n < t.nt()) {
        const int64_t o = t.o0 + n;
        v = mask[(t.it * M + m) * N + o] ? gy[m * N + o] : T(0);
        for (int64_t j = 0; j < n_scales; ++j) v = mul_rn(v, out_scales[(j * tin + t.it) * N + o]);
      }
      g[m * ldn + n] = v;
    }
  }
}

// xs = DAC(x * s) / s: the quantised input scaled back, the weight gradient's operand.
template <typename T>
__global__ void scaled_input_kernel(const T* __restrict__ x, int64_t M, int64_t K, TileGeom t,
                                    const T* __restrict__ s_tile, bool scaling, T step, T bound,
                                    T* __restrict__ xs, int64_t ldk) {
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    const T sm = scaling ? s_tile[m] : T(1);
    const T inv_s = div_rn(T(1), sm);
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < ldk;
         k += int64_t(gridDim.x) * blockDim.x) {
      T v = T(0);
      if (k < t.kt()) v = mul_rn(dac_quantize<T>(mul_rn(x[m * K + t.k0 + k], sm), step, bound), inv_s);
      xs[m * ldk + k] = v;
    }
  }
}

// grad_x[:, k0:k1] (+)= (G W̃) ⊙ DAC mask.
template <typename T>
struct GradXEpilogue {
  const T* x;
  const T* s_tile;
  int64_t K, k0;
  bool scaling, dac_may_clamp, accumulate;
  T step, bound;
  T* grad_x;

  __device__ __forceinline__ void one(int64_t m, int64_t k, T v) const {
    const int64_t e = m * K + k0 + k;
    if (dac_may_clamp) {
      const T sm = scaling ? s_tile[m] : T(1);
      const T xin = mul_rn(x[e], sm);
      v = mul_rn(v, dac_passes_gradient<T>(xin, step, bound) ? T(1) : T(0));
    }
    grad_x[e] = accumulate ? add_rn(grad_x[e], v) : v;
  }
  __device__ __forceinline__ bool pair(int64_t m, int64_t k, T v0, T v1, bool has1) const {
    one(m, k, v0);
    if (has1) one(m, k + 1, v1);
    return false;
  }
  __device__ __forceinline__ void flag_row(int64_t) const {}
};

// The backward read (params.bwd_read; docs/numerics.md, "The backward read"): one pass's
// epilogue of g_q W̃ for the pending rows: output noise on its own stream (element m*K + k0 + k
// of (backward output, pass, tile index)), the backward ADC, the bound test, the clamp and the
// read's input scale undone, into dx [M, ld]; a row that runs again is overwritten by its next
// pass, as on the CPU.
template <typename T>
struct ReadEpilogue {
  const int* rows;  // compacted pending rows of this pass, or null (identity)
  int64_t K, k0, index, pass;
  T sigma, step, bound;
  const int64_t* rng;
  const T* s_read;  // [M] the read's input scale of each row's pass
  T* dx;
  int64_t ld;
  int* row_bad;
  TileState* state;

  __device__ __forceinline__ bool element(int64_t m, int64_t k, T v, T noise, T inv_s) const {
    if (sigma > T(0)) v = add_rn(v, mul_rn(sigma, noise));
    v = adc_round<T>(v, step);
    const bool inside = v <= bound && v >= -bound;  // tested after rounding, before the clamp
    v = clamp_nan<T>(v, -bound, bound);
    dx[m * ld + k] = mul_rn(v, inv_s);
    return !inside;
  }

  __device__ __forceinline__ bool pair(int64_t i, int64_t j, T v0, T v1, bool has1) const {
    const int64_t m = rows ? rows[i] : i;
    T n0 = T(0), n1 = T(0);
    if (sigma > T(0)) {
      const NoiseKey key =
          make_noise_key(static_cast<uint64_t>(rng[0]), static_cast<uint64_t>(rng[1]), kStreamBackwardOutput,
                         static_cast<uint32_t>(pass), static_cast<uint32_t>(index));
      float z0 = 0.f, z1 = 0.f;
      detail::stream_normals(key, static_cast<uint64_t>(m) * K + k0 + j, has1, &z0, &z1);
      n0 = static_cast<T>(z0);
      n1 = static_cast<T>(z1);
    }
    const T inv_s = div_rn(T(1), s_read[m]);
    bool bad = element(m, j, v0, n0, inv_s);
    if (has1) bad |= element(m, j + 1, v1, n1, inv_s);
    return bad;
  }

  __device__ __forceinline__ void flag_row(int64_t i) const {
    const int64_t m = rows ? rows[i] : i;
    row_bad[m] = 1;  // benign race: every writer stores 1
    state->bad = 1;
  }
};

// After the read's passes: grad_x[:, k0:k1] (+)= dx ⊙ DAC mask (GradXEpilogue's rule); an
// all-zero g (abs-max or max noise management) reads exact zeros, as AIHWKIT and the CPU.
template <typename T>
__global__ void read_finish_kernel(const TileState* __restrict__ state, bool abs_max, const T* __restrict__ dx,
                                   int64_t ld, int64_t M, TileGeom t, GradXEpilogue<T> epi) {
  const bool zero = abs_max && !state->any_nonzero;
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < t.kt();
         k += int64_t(gridDim.x) * blockDim.x) {
      epi.one(m, k, zero ? T(0) : dx[m * ld + k]);
    }
  }
}

// grad_w[o0:o1, k0:k1] = Gᵀ xs (tiles are disjoint: a plain store).
template <typename T>
struct GradWEpilogue {
  int64_t K, o0, k0;
  T* grad_w;
  __device__ __forceinline__ bool pair(int64_t o, int64_t k, T v0, T v1, bool has1) const {
    T* row = grad_w + (o0 + o) * K + k0 + k;
    row[0] = v0;
    if (has1) row[1] = v1;
    return false;
  }
  __device__ __forceinline__ void flag_row(int64_t) const {}
};

struct BackwardLayout {
  int64_t max_kt, max_nt, ldk, ldn, ldm;
};

BackwardLayout backward_layout(int64_t M, int64_t K, int64_t N, const CrossbarParams& p) {
  const int64_t max_kt = max_chunk(K, p.max_in), max_nt = max_chunk(N, p.max_out);
  return {max_kt, max_nt, round_up(max_kt, 4), round_up(max_nt, 4), round_up(M, 4)};
}

template <typename T>
struct BackwardBuffers {
  T *wt, *wtT, *g, *gT, *xs, *xsT;
  unsigned long long* wmax;
  // the backward read's (params.bwd_read): noise management, quantised g, its output, bound management
  T *inv_a, *gq, *dx, *s_read;
  int32_t* passes_read;
  int* rows[2];
  int* row_bad;
  TileState* state;
};

template <typename T>
BackwardBuffers<T> carve_backward(Carver& c, int64_t M, int64_t K, int64_t N,
                                  const CrossbarParams& p, bool need_x, bool need_w) {
  const BackwardLayout l = backward_layout(M, K, N, p);
  BackwardBuffers<T> b{};
  b.g = c.take<T>(M * l.ldn);
  if (need_x) {
    b.wt = c.take<T>(l.max_nt * l.ldk);
    b.wtT = c.take<T>(l.max_kt * l.ldn);
    if (p.bwd_read) {
      b.inv_a = c.take<T>(M);
      b.gq = c.take<T>(M * l.ldn);
      b.dx = c.take<T>(M * l.ldk);
      b.s_read = c.take<T>(M);
      b.passes_read = c.take<int32_t>(M);
      b.rows[0] = c.take<int>(M);
      b.rows[1] = c.take<int>(M);
      b.row_bad = c.take<int>(M);
      b.state = c.take<TileState>(1);
    }
  }
  if (need_w) {
    b.gT = c.take<T>(l.max_nt * l.ldm);
    b.xs = c.take<T>(M * l.ldk);
    b.xsT = c.take<T>(l.max_kt * l.ldm);
  }
  b.wmax = c.take<unsigned long long>(1);
  return b;
}

// The input gradient of tile t read through the crossbar (params.bwd_read): the forward's
// pipeline run on the transposed problem. g [M, ldn] (b.g) is the read's input and W̃ᵀ
// [kt, ldn] (b.wtT) its tile: noise management of g's rows, then per bound-management pass
// the backward DAC (quantize_kernel), the GEMM g_q W̃ with ReadEpilogue, and select_kernel;
// finally read_finish_kernel masks and stores (or adds) into grad_x through `out`.
template <typename T>
cudaError_t backward_read(const BackwardBuffers<T>& b, const BackwardLayout& l, const TileGeom& t, int64_t M,
                          int64_t K, const CrossbarParams& p, const int64_t* rng, bool allow_tf32,
                          const GradXEpilogue<T>& out, cudaStream_t stream) {
  const CrossbarParams r = backward_read_params(p);
  const TileGeom rt{0, t.nt(), 0, t.kt(), 0, 0};  // the read's tile: inputs = the tile's outputs
  const bool abs_max = r.noise_management == NoiseManagement::kAbsMax ||
                       r.noise_management == NoiseManagement::kMax;
  const bool signed_max = r.noise_management == NoiseManagement::kMax;
  const bool scaling = r.noise_management != NoiseManagement::kNone ||
                       r.bound_management != BoundManagement::kNone;
  const int max_passes = r.bound_management == BoundManagement::kNone ? 1 : r.max_passes;
  const T dac_step = static_cast<T>(2.0 * r.inp_bound * r.inp_res);
  const T dac_bound = static_cast<T>(r.inp_bound);
  const T adc_step = static_cast<T>(2.0 * r.out_bound * r.out_res);
  const T adc_bound = r.out_bound > 0 ? static_cast<T>(r.out_bound) : std::numeric_limits<T>::infinity();
  LF_CUDA_TRY(cudaMemsetAsync(b.state, 0, sizeof(TileState), stream));
  absmax_kernel<T><<<grid_cap(ceil_div(M, 8), 4096), 256, 0, stream>>>(
      b.g, M, l.ldn, rt, abs_max, signed_max, static_cast<T>(r.nm_thres), b.inv_a, b.state, nullptr);
  LF_CUDA_TRY(cudaGetLastError());
  tile_begin_kernel<T><<<1, 1, 0, stream>>>(b.state, M, abs_max);
  LF_CUDA_TRY(cudaGetLastError());
  T reduction = T(1);
  for (int pass = 0; pass < max_passes; ++pass, reduction = reduction * T(2)) {
    const int* rows_in = pass == 0 ? nullptr : b.rows[(pass - 1) % 2];
    quantize_kernel<T><<<rows_grid(l.ldn, M, 256), 256, 0, stream>>>(
        b.g, l.ldn, rt, b.inv_a, rows_in, b.state, reduction, scaling, dac_step, dac_bound, pass, b.gq, l.ldn,
        b.s_read, b.passes_read, b.row_bad, nullptr);
    LF_CUDA_TRY(cudaGetLastError());
    ReadEpilogue<T> epi{rows_in,  K,         t.k0, t.index, pass,     static_cast<T>(r.out_noise),
                        adc_step, adc_bound, rng,  b.s_read, b.dx,    l.ldk,
                        b.row_bad, b.state};
    const GemmShape shape{M, &b.state->count, t.kt(), l.ldn, l.ldn, l.ldn};
    LF_CUDA_TRY(detail::launch_gemm_nt<T>(b.gq, b.wtT, shape, M, allow_tf32, epi, stream));
    select_kernel<<<1, 1024, 0, stream>>>(b.state, rows_in, b.rows[pass % 2], b.row_bad,
                                          static_cast<int>(r.bound_management), pass + 1 == max_passes);
    LF_CUDA_TRY(cudaGetLastError());
  }
  read_finish_kernel<T><<<rows_grid(t.kt(), M, 256), 256, 0, stream>>>(b.state, abs_max, b.dx, l.ldk, M, t, out);
  return cudaGetLastError();
}

}  // namespace

size_t crossbar_backward_workspace_bytes(int64_t M, int64_t K, int64_t N,
                                         const CrossbarParams& p, size_t elem_size,
                                         bool need_grad_x, bool need_grad_w) {
  Carver c{nullptr};
  if (elem_size == sizeof(double)) {
    carve_backward<double>(c, M, K, N, p, need_grad_x, need_grad_w);
  } else {
    carve_backward<float>(c, M, K, N, p, need_grad_x, need_grad_w);
  }
  return c.used;
}

template <typename T>
cudaError_t crossbar_backward(const CrossbarBackwardArgs<T>& a, const CrossbarParams& p,
                              bool training, bool allow_tf32, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  const int64_t M = a.M, K = a.K, N = a.N;
  const bool need_x = a.grad_x != nullptr, need_w = a.grad_w != nullptr;
  if (M <= 0 || K <= 0 || N <= 0 || (!need_x && !need_w)) return cudaSuccess;
  if (workspace_bytes < crossbar_backward_workspace_bytes(M, K, N, p, sizeof(T), need_x, need_w))
    return cudaErrorInvalidValue;
  Carver c{static_cast<char*>(workspace)};
  const BackwardBuffers<T> b = carve_backward<T>(c, M, K, N, p, need_x, need_w);
  const BackwardLayout l = backward_layout(M, K, N, p);
  const int64_t tin = split_count(K, p.max_in), tout = split_count(N, p.max_out);
  const bool one_tile = tin * tout == 1;
  const T step = static_cast<T>(2.0 * p.inp_bound * p.inp_res);
  const T bound = static_cast<T>(p.inp_bound);
  const bool scaling = p.noise_management != NoiseManagement::kNone ||
                       p.bound_management != BoundManagement::kNone;
  // As the CPU: with abs-max scaling |x s| <= 1, so a DAC range holding the largest code
  // never clamps and needs no mask.
  const double largest_code = dac_quantize<double>(1.0, 2.0 * p.inp_bound * p.inp_res, 0.0);
  const bool dac_may_clamp =
      p.inp_bound > 0.0 && !(p.noise_management == NoiseManagement::kAbsMax &&
                             p.nm_thres == 0.0 && largest_code <= p.inp_bound);
  if (need_x && !one_tile) LF_CUDA_TRY(cudaMemsetAsync(a.grad_x, 0, sizeof(T) * M * K, stream));

  for (int64_t it = 0; it < tin; ++it) {
    for (int64_t ot = 0; ot < tout; ++ot) {
      const TileGeom t = tile_geom(K, N, p, it, ot);
      const T* s_tile = a.s + t.index * M;
      const T* gy_block = a.grad_y + (p.per_input_tile ? it * M * N : 0);  // [Tin, M, N]
      grad_out_kernel<T><<<rows_grid(l.ldn, M, 128), 128, 0, stream>>>(
          gy_block, a.mask, a.out_scales, a.n_scales, tin, M, N, t, b.g, l.ldn);
      LF_CUDA_TRY(cudaGetLastError());
      if (need_x) {
        // grad_x tile = G W̃ (regenerated from the seed, never stored): NT form with W̃ᵀ.
        LF_CUDA_TRY(prepare_weight<T>(a.weight, K, t, p, training, a.rng, a.noise_weight, b.wmax,
                                      b.wt, l.ldk, stream));
        LF_CUDA_TRY(detail::launch_transpose<T>(b.wt, t.nt(), t.kt(), l.ldk, b.wtT, l.ldn, l.ldn,
                                                stream));
        GradXEpilogue<T> epi{a.x, s_tile, K, t.k0, scaling, dac_may_clamp, !one_tile, step,
                             bound, a.grad_x};
        if (p.bwd_read) {
          LF_CUDA_TRY(backward_read<T>(b, l, t, M, K, p, a.rng, allow_tf32, epi, stream));
        } else {
          const GemmShape shape{M, nullptr, t.kt(), l.ldn, l.ldn, l.ldn};
          LF_CUDA_TRY(detail::launch_gemm_nt<T>(b.g, b.wtT, shape, M, allow_tf32, epi, stream));
        }
      }
      if (need_w) {
        // grad_w tile = Gᵀ xs: NT form with both operands transposed (depth = tokens).
        scaled_input_kernel<T><<<rows_grid(l.ldk, M, 128), 128, 0, stream>>>(
            a.x, M, K, t, s_tile, scaling, step, bound, b.xs, l.ldk);
        LF_CUDA_TRY(cudaGetLastError());
        LF_CUDA_TRY(detail::launch_transpose<T>(b.g, M, t.nt(), l.ldn, b.gT, l.ldm, l.ldm, stream));
        LF_CUDA_TRY(detail::launch_transpose<T>(b.xs, M, t.kt(), l.ldk, b.xsT, l.ldm, l.ldm,
                                                stream));
        GradWEpilogue<T> epi{K, t.o0, t.k0, a.grad_w};
        const GemmShape shape{t.nt(), nullptr, t.kt(), l.ldm, l.ldm, l.ldm};
        LF_CUDA_TRY(detail::launch_gemm_nt<T>(b.gT, b.xsT, shape, t.nt(), allow_tf32, epi, stream));
      }
    }
  }
  return cudaSuccess;
}

#define LF_INSTANTIATE(T)                                                                      \
  template cudaError_t crossbar_forward<T>(const CrossbarForwardArgs<T>&, const CrossbarParams&, \
                                           bool, bool, void*, size_t, cudaStream_t);            \
  template cudaError_t crossbar_backward<T>(const CrossbarBackwardArgs<T>&,                     \
                                            const CrossbarParams&, bool, bool, void*, size_t,   \
                                            cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lorafusion::cuda
