// Shared device helpers of the lorafusion CUDA kernels: explicitly rounded arithmetic, a
// workspace carver, and the two "NT" GEMM kernels (C[i, j] = sum_k A[i, k] * B[j, k], both
// operands K-contiguous) with a pluggable fused epilogue:
//   - gemm_tf32_nt: tensor cores (mma.sync m16n8k8 TF32, fp32 accumulate), cp.async 3-stage
//     pipeline; sm_80+ (the only targets we build).
//   - gemm_simt_nt: exact fp32/fp64 FMA tiles (register-blocked outer products).
// CUDA headers only, no torch (docs/architecture.md). No cuBLAS: it is not available at
// compile time on every machine that builds these files.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace lorafusion::cuda::detail {

// ---------------------------------------------------------------- explicit rounding
// nvcc contracts a*b+c into one FMA by default (--fmad=true) and we do not control the flags
// of every build that compiles these files, so the epilogues spell out each rounding where
// the CPU kernel (built with -ffp-contract=off) rounds the product on its own.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <typename T>
__device__ __forceinline__ T quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000LL);
}
template <typename T>
__device__ __forceinline__ T infinity();
template <>
__device__ __forceinline__ float infinity<float>() { return __int_as_float(0x7f800000); }
template <>
__device__ __forceinline__ double infinity<double>() {
  return __longlong_as_double(0x7ff0000000000000LL);
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Carves aligned sub-buffers out of one caller-provided workspace (the torch glue allocates
// it through the caching allocator, so the kernels never call cudaMalloc themselves). With a
// null base it only measures.
struct Carver {
  char* base;
  size_t used = 0;
  template <typename U>
  U* take(int64_t count) {
    used = (used + 255) & ~static_cast<size_t>(255);  // 256 B: cp.async and coalescing
    U* p = base ? reinterpret_cast<U*>(base + used) : nullptr;
    used += static_cast<size_t>(count > 0 ? count : 0) * sizeof(U);
    return p;
  }
};

inline int grid_cap(int64_t blocks, int64_t cap = 65535) {
  return static_cast<int>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// ---------------------------------------------------------------- GEMM problem
// Rows of C: `rows` (or *rows_dev when non-null: the compacted row count of a bound-management
// pass lives on the device, so a pass needs no host sync and can be graph-captured).
struct GemmShape {
  int64_t rows;
  const int* rows_dev;
  int64_t cols;
  int64_t depth;  // K; for the TF32 kernel a multiple of 4 with zero padding up to ld
  int64_t lda, ldb;
};

__device__ __forceinline__ int64_t gemm_rows(const GemmShape& s) {
  return s.rows_dev ? static_cast<int64_t>(*s.rows_dev) : s.rows;
}

// The epilogue contract: epi.pair(i, j, v0, v1, has1) consumes C[i, j] and, when has1,
// C[i, j + 1]; it returns true when the row must be flagged (bound test failed); the kernel
// then calls epi.flag_row(i) once per thread and row. Columns come in pairs so that one
// Philox block serves two neighbouring outputs.

// ---------------------------------------------------------------- TF32 tensor cores
namespace tf32 {
constexpr int BM = 128, BN = 128, BK = 32, STAGES = 3, THREADS = 256;
constexpr int PAD = 4;  // row stride 36 floats: fragment loads hit 32 distinct banks
constexpr int LDS = BK + PAD;
constexpr int WM = 64, WN = 32;  // warp tile: 2 x 4 warps
constexpr int MI = WM / 16, NI = WN / 8;
constexpr size_t smem_bytes() { return size_t(STAGES) * (BM + BN) * LDS * sizeof(float); }

__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
  return r;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mma_tf32(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One stage: BM x BK of A and BN x BK of B, 16-byte chunks; rows past the end and chunks past
// `depth` are zero-filled by cp.async's src-size operand (the source address stays valid).
__device__ __forceinline__ void load_stage(float* As, float* Bs, const float* A, const float* B,
                                           const GemmShape& s, int64_t rows, int64_t row0,
                                           int64_t col0, int64_t k0) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int j = 0; j < (BM * BK / 4) / THREADS; ++j) {
    const int c = tid + j * THREADS;
    const int r = c / (BK / 4), kc = (c % (BK / 4)) * 4;
    const int64_t gr = row0 + r, gk = k0 + kc;
    const bool ok = gr < rows && gk < s.depth;
    cp_async16(As + r * LDS + kc, ok ? A + gr * s.lda + gk : A, ok ? 16 : 0);
  }
#pragma unroll
  for (int j = 0; j < (BN * BK / 4) / THREADS; ++j) {
    const int c = tid + j * THREADS;
    const int r = c / (BK / 4), kc = (c % (BK / 4)) * 4;
    const int64_t gc = col0 + r, gk = k0 + kc;
    const bool ok = gc < s.cols && gk < s.depth;
    cp_async16(Bs + r * LDS + kc, ok ? B + gc * s.ldb + gk : B, ok ? 16 : 0);
  }
}

// Requirements (checked by the launchers): A, B 16-byte aligned, lda and ldb multiples of 4,
// and the columns between depth and the next multiple of 4 readable (depth is rounded up to
// a multiple of 4 by the caller, with zeros there).
template <class Epi>
__global__ void __launch_bounds__(THREADS) gemm_tf32_nt(const float* __restrict__ A,
                                                        const float* __restrict__ B,
                                                        GemmShape s, Epi epi) {
  extern __shared__ __align__(16) float smem[];
  float* As = smem;
  float* Bs = smem + STAGES * BM * LDS;
  const int64_t rows = gemm_rows(s);
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 4, wn = warp % 4;  // 2 x 4 warps
  const int g = lane >> 2, t = lane & 3;
  const int64_t ktiles = ceil_div(s.depth, BK);
  // Row blocks beyond the grid's y extent loop (more than 65535 * 128 rows).
  for (int64_t rb = blockIdx.y; rb * BM < rows; rb += gridDim.y) {
    const int64_t row0 = rb * BM;
    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[mi][ni][q] = 0.f;

#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
      if (st < ktiles)
        load_stage(As + st * BM * LDS, Bs + st * BN * LDS, A, B, s, rows, row0, col0,
                   static_cast<int64_t>(st) * BK);
      cp_async_commit();
    }
    for (int64_t kt = 0; kt < ktiles; ++kt) {
      cp_async_wait<STAGES - 2>();
      __syncthreads();  // stage kt landed for everyone; stage kt-1 is no longer read
      const int64_t pre = kt + STAGES - 1;
      if (pre < ktiles) {
        const int ps = static_cast<int>(pre % STAGES);
        load_stage(As + ps * BM * LDS, Bs + ps * BN * LDS, A, B, s, rows, row0, col0, pre * BK);
      }
      cp_async_commit();  // (empty groups keep the wait_group count uniform)
      const int cs = static_cast<int>(kt % STAGES);
      const float* as = As + cs * BM * LDS + (wm * WM) * LDS;
      const float* bs = Bs + cs * BN * LDS + (wn * WN) * LDS;
#pragma unroll
      for (int kk = 0; kk < BK; kk += 8) {
        uint32_t af[MI][4], bf[NI][2];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const float* p = as + (mi * 16 + g) * LDS + kk + t;
          af[mi][0] = to_tf32(p[0]);
          af[mi][1] = to_tf32(p[8 * LDS]);
          af[mi][2] = to_tf32(p[4]);
          af[mi][3] = to_tf32(p[8 * LDS + 4]);
        }
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const float* p = bs + (ni * 8 + g) * LDS + kk + t;
          bf[ni][0] = to_tf32(p[0]);
          bf[ni][1] = to_tf32(p[4]);
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) mma_tf32(acc[mi][ni], af[mi], bf[ni]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next row block reuses the stages

    // Epilogue straight from the accumulator fragments: c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, ..).
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t i = row0 + wm * WM + mi * 16 + g + half * 8;
        if (i >= rows) continue;
        bool bad = false;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int64_t j = col0 + wn * WN + ni * 8 + 2 * t;
          if (j >= s.cols) continue;
          bad |= epi.pair(i, j, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1], j + 1 < s.cols);
        }
        if (bad) epi.flag_row(i);
      }
    }
  }
}
}  // namespace tf32

// ---------------------------------------------------------------- exact SIMT GEMM
template <typename T>
struct SimtCfg;
template <>
struct SimtCfg<float> {
  static constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
};
template <>
struct SimtCfg<double> {
  static constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4;
};
constexpr int kSimtThreads = 256;

// Register-prefetched double buffering: the next K slab is read from global memory into
// registers while the current one is multiplied out of shared memory. Operands are stored
// transposed in shared memory (k-major) so each thread's TM/TN fragment is contiguous.
// Any alignment and leading dimensions: loads are scalar and bounds-checked.
template <typename T, class Epi>
__global__ void __launch_bounds__(kSimtThreads) gemm_simt_nt(const T* __restrict__ A,
                                                             const T* __restrict__ B,
                                                             GemmShape s, Epi epi) {
  using C = SimtCfg<T>;
  constexpr int BM = C::BM, BN = C::BN, BK = C::BK, TM = C::TM, TN = C::TN;
  constexpr int LA = (BM * BK) / kSimtThreads, LB = (BN * BK) / kSimtThreads;
  constexpr int PADS = 4;
  static_assert((BM / TM) * (BN / TN) == kSimtThreads, "one thread per TM x TN fragment");
  __shared__ T As[2][BK][BM + PADS];
  __shared__ T Bs[2][BK][BN + PADS];
  const int64_t rows = gemm_rows(s);
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  const int64_t ktiles = ceil_div(s.depth, BK);
  for (int64_t rb = blockIdx.y; rb * BM < rows; rb += gridDim.y) {
    const int64_t row0 = rb * BM;
    T ra[LA], rbv[LB];
    auto fetch = [&](int64_t k0) {
#pragma unroll
      for (int j = 0; j < LA; ++j) {
        const int c = tid + j * kSimtThreads;
        const int r = c / BK, k = c % BK;
        const int64_t gr = row0 + r, gk = k0 + k;
        ra[j] = (gr < rows && gk < s.depth) ? A[gr * s.lda + gk] : T(0);
      }
#pragma unroll
      for (int j = 0; j < LB; ++j) {
        const int c = tid + j * kSimtThreads;
        const int r = c / BK, k = c % BK;
        const int64_t gc = col0 + r, gk = k0 + k;
        rbv[j] = (gc < s.cols && gk < s.depth) ? B[gc * s.ldb + gk] : T(0);
      }
    };
    auto stash = [&](int buf) {
#pragma unroll
      for (int j = 0; j < LA; ++j) {
        const int c = tid + j * kSimtThreads;
        As[buf][c % BK][c / BK] = ra[j];
      }
#pragma unroll
      for (int j = 0; j < LB; ++j) {
        const int c = tid + j * kSimtThreads;
        Bs[buf][c % BK][c / BK] = rbv[j];
      }
    };
    T acc[TM][TN];
#pragma unroll
    for (int a = 0; a < TM; ++a)
#pragma unroll
      for (int b = 0; b < TN; ++b) acc[a][b] = T(0);
    __syncthreads();  // the previous row block's readers are done with the buffers
    if (ktiles > 0) {
      fetch(0);
      stash(0);
    }
    __syncthreads();
    for (int64_t kt = 0; kt < ktiles; ++kt) {
      const int buf = static_cast<int>(kt & 1);
      if (kt + 1 < ktiles) fetch((kt + 1) * BK);
#pragma unroll
      for (int k = 0; k < BK; ++k) {
        T av[TM], bv[TN];
#pragma unroll
        for (int a = 0; a < TM; ++a) av[a] = As[buf][k][ty * TM + a];
#pragma unroll
        for (int b = 0; b < TN; ++b) bv[b] = Bs[buf][k][tx * TN + b];
#pragma unroll
        for (int a = 0; a < TM; ++a)
#pragma unroll
          for (int b = 0; b < TN; ++b) acc[a][b] = fma(av[a], bv[b], acc[a][b]);
      }
      if (kt + 1 < ktiles) stash(buf ^ 1);
      __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < TM; ++a) {
      const int64_t i = row0 + ty * TM + a;
      if (i >= rows) continue;
      bool bad = false;
#pragma unroll
      for (int b = 0; b < TN; b += 2) {
        const int64_t j = col0 + tx * TN + b;
        if (j >= s.cols) continue;
        bad |= epi.pair(i, j, acc[a][b], acc[a][b + 1], j + 1 < s.cols);
      }
      if (bad) epi.flag_row(i);
    }
  }
}

// Launches C = A Bᵀ with epilogue `epi`: TF32 tensor cores when allowed (float only) and the
// operands meet the cp.async alignment rules, exact SIMT otherwise. `max_rows` sizes the grid
// (the device-side row count may be smaller: surplus blocks exit at once).
template <typename T, class Epi>
cudaError_t launch_gemm_nt(const T* A, const T* B, const GemmShape& s, int64_t max_rows,
                           bool allow_tf32, const Epi& epi, cudaStream_t stream) {
  if (max_rows <= 0 || s.cols <= 0) return cudaSuccess;
  if constexpr (sizeof(T) == 4) {
    const bool aligned = (reinterpret_cast<uintptr_t>(A) % 16 == 0) &&
                         (reinterpret_cast<uintptr_t>(B) % 16 == 0) && s.lda % 4 == 0 &&
                         s.ldb % 4 == 0 && s.depth % 4 == 0;
    if (allow_tf32 && aligned) {
      auto kernel = tf32::gemm_tf32_nt<Epi>;
      cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(tf32::smem_bytes()));
      if (err != cudaSuccess) return err;
      const dim3 grid(static_cast<unsigned>(ceil_div(s.cols, tf32::BN)),
                      static_cast<unsigned>(grid_cap(ceil_div(max_rows, tf32::BM))));
      kernel<<<grid, tf32::THREADS, tf32::smem_bytes(), stream>>>(
          reinterpret_cast<const float*>(A), reinterpret_cast<const float*>(B), s, epi);
      return cudaGetLastError();
    }
  }
  using Cfg = SimtCfg<T>;
  const dim3 grid(static_cast<unsigned>(ceil_div(s.cols, Cfg::BN)),
                  static_cast<unsigned>(grid_cap(ceil_div(max_rows, Cfg::BM))));
  gemm_simt_nt<T, Epi><<<grid, kSimtThreads, 0, stream>>>(A, B, s, epi);
  return cudaGetLastError();
}

// ---------------------------------------------------------------- small utilities
// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols; zero in dst's padding
// columns [rows, pad_rows) so a padded operand is safe for the TF32 loader.
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ src, int64_t rows, int64_t cols,
                                 int64_t ld_src, T* __restrict__ dst, int64_t ld_dst,
                                 int64_t pad_rows) {
  __shared__ T tile[32][33];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 32, c0 = static_cast<int64_t>(blockIdx.x) * 32;
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t r = r0 + y, c = c0 + threadIdx.x;
    tile[y][threadIdx.x] = (r < rows && c < cols) ? src[r * ld_src + c] : T(0);
  }
  __syncthreads();
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t c = c0 + y, r = r0 + threadIdx.x;
    if (c < cols && r < pad_rows) dst[c * ld_dst + r] = tile[threadIdx.x][y];
  }
}

template <typename T>
cudaError_t launch_transpose(const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst,
                             int64_t ld_dst, int64_t pad_rows, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(ceil_div(cols, 32)),
                  static_cast<unsigned>(ceil_div(pad_rows, 32)));
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  transpose_kernel<T><<<grid, dim3(32, 8), 0, stream>>>(src, rows, cols, ld_src, dst, ld_dst,
                                                        pad_rows);
  return cudaGetLastError();
}

#define LF_CUDA_TRY(expr)                     \
  do {                                        \
    const cudaError_t lf_err_ = (expr);       \
    if (lf_err_ != cudaSuccess) return lf_err_; \
  } while (0)

}  // namespace lorafusion::cuda::detail
