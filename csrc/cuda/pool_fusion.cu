// CUDA pooled LoRA fusion (docs/numerics.md, "Pooled LoRA fusion"), the CPU op's algorithm (csrc/cpu/pool_fusion.cpp):
// the pool is stacked (A_cat [K·r, d_in] is A itself; B_cat [d_out, K·r] one permuted copy), and
//   sum / per-row tasks:  H = x A_catᵀ with the coefficient scaling fused into the shrink GEMM's
//                         epilogue (S = s (c_row ⊗ 1_r) ⊙ H, the row's coefficients gathered by
//                         task id), then y = S B_catᵀ;
//   lorahub with tasks:   H = x A_catᵀ, a row kernel (h = Σ c_k H_k, S_k = s c_k h), expand;
//   lorahub, one vector:  Â = Σ c_k A_k, B̂ = s Σ c_k B_k (merge), h = x Âᵀ, y = h B̂ᵀ.
// Backward: dS = G B_cat, a per-row kernel (dH, per-row coefficient gradients, S) in the
// CPU's order of operations, a deterministic per-task reduction for the coefficient table,
// then the GEMMs for x, A, B. Nothing loops over K on the host; no per-sample ΔW exists.
#include "common.cuh"
#include "launch.h"

namespace lorafusion::cuda {
namespace {

using detail::add_rn;
using detail::Carver;
using detail::ceil_div;
using detail::GemmShape;
using detail::grid_cap;
using detail::launch_gemm_nt;
using detail::launch_transpose;
using detail::mul_rn;
using detail::round_up;

// The coefficient row of token m, or null when its task id is out of range.
template <typename T>
struct CoeffRows {
  const T* c;
  const int64_t* ids;
  int64_t K, n_tasks;
  __device__ __forceinline__ const T* row(int64_t m) const {
    if (!ids) return c;
    const int64_t t = ids[m];
    return (t < 0 || t >= n_tasks) ? nullptr : c + t * K;
  }
};

// ---------------------------------------------------------------- epilogues
// H (returned to the caller as `hidden`) and, in sum mode, S = H * (c_k * s) fused.
template <typename T>
struct ShrinkEpilogue {
  CoeffRows<T> cf;
  int64_t r, width, ld_s;
  T s;
  bool sum_mode;
  T* H;  // [M, width]
  T* S;  // [M, ld_s] or null

  __device__ __forceinline__ void one(int64_t m, int64_t j, T v, const T* cm) const {
    H[m * width + j] = v;
    if (sum_mode) {
      const T ck = cm ? mul_rn(cm[j / r], s) : detail::quiet_nan<T>();
      S[m * ld_s + j] = mul_rn(v, ck);
    }
  }
  __device__ __forceinline__ bool pair(int64_t m, int64_t j, T v0, T v1, bool has1) const {
    const T* cm = sum_mode ? cf.row(m) : nullptr;
    one(m, j, v0, cm);
    if (has1) one(m, j + 1, v1, cm);
    return false;
  }
  __device__ __forceinline__ void flag_row(int64_t) const {}
};

// out[m * ld + j] = v * mul (mul == 1: a plain store, no rounding change).
template <typename T>
struct StoreEpilogue {
  T* out;
  int64_t ld;
  T mul;
  bool scaled;
  __device__ __forceinline__ bool pair(int64_t m, int64_t j, T v0, T v1, bool has1) const {
    T* o = out + m * ld + j;
    o[0] = scaled ? mul_rn(v0, mul) : v0;
    if (has1) o[1] = scaled ? mul_rn(v1, mul) : v1;
    return false;
  }
  __device__ __forceinline__ void flag_row(int64_t) const {}
};

// Two destinations (hidden h [M, r] and its padded copy for the expand GEMM).
template <typename T>
struct DualStoreEpilogue {
  T* a;
  int64_t lda;
  T* b;
  int64_t ldb;
  __device__ __forceinline__ bool pair(int64_t m, int64_t j, T v0, T v1, bool has1) const {
    a[m * lda + j] = v0;
    b[m * ldb + j] = v0;
    if (has1) {
      a[m * lda + j + 1] = v1;
      b[m * ldb + j + 1] = v1;
    }
    return false;
  }
  __device__ __forceinline__ void flag_row(int64_t) const {}
};

// grad_B[k, n, j] from the column c = k*r + j of Gᵀ S [d_out, K·r].
template <typename T>
struct GradBEpilogue {
  T* gB;
  int64_t r, d_out;
  __device__ __forceinline__ void one(int64_t n, int64_t c, T v) const {
    gB[((c / r) * d_out + n) * r + c % r] = v;
  }
  __device__ __forceinline__ bool pair(int64_t n, int64_t c, T v0, T v1, bool has1) const {
    one(n, c, v0);
    if (has1) one(n, c + 1, v1);
    return false;
  }
  __device__ __forceinline__ void flag_row(int64_t) const {}
};

// ---------------------------------------------------------------- small kernels
// B_cat[n, k*r + j] = B[k, n, j] into [d_out, ld] (zero padding), or its transpose
// B_catᵀ[k*r + j, n] into [K·r, ld] when `transposed`.
template <typename T>
__global__ void stack_b_kernel(const T* __restrict__ B, int64_t K, int64_t d_out, int64_t r,
                               T* __restrict__ dst, int64_t ld, bool transposed) {
  const int64_t width = K * r;
  const int64_t rows = transposed ? width : d_out;
  const int64_t total = rows * ld;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / ld, col = e % ld;
    T v = T(0);
    if (transposed) {
      if (col < d_out) v = B[((row / r) * d_out + col) * r + row % r];
    } else if (col < width) {
      v = B[((col / r) * d_out + row) * r + col % r];
    }
    dst[e] = v;
  }
}

// Â = Σ_k c_k A_k [r, d_in] (ld d_in) and B̂ = (Σ_k c_k B_k) [d_out, r] times `b_scale` when
// `scale_b`, written as [d_out, ld_b] or transposed [r, ld_b] (zero padding).
template <typename T>
__global__ void merge_kernel(const T* __restrict__ A, const T* __restrict__ B,
                             const T* __restrict__ c, int64_t K, int64_t r, int64_t d_in,
                             int64_t d_out, T* __restrict__ a_hat, T* __restrict__ b_hat,
                             int64_t ld_b, bool b_transposed, bool scale_b, T b_scale) {
  const int64_t na = r * d_in;
  const int64_t nb = b_transposed ? r * ld_b : d_out * ld_b;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < na + nb;
       e += int64_t(gridDim.x) * blockDim.x) {
    if (e < na) {
      T acc = T(0);
      for (int64_t k = 0; k < K; ++k) acc = add_rn(acc, mul_rn(c[k], A[k * na + e]));
      a_hat[e] = acc;
      continue;
    }
    const int64_t f = e - na;
    const int64_t row = f / ld_b, col = f % ld_b;
    const int64_t n = b_transposed ? col : row, j = b_transposed ? row : col;
    T acc = T(0);
    if (n < d_out && j < r) {
      for (int64_t k = 0; k < K; ++k) acc = add_rn(acc, mul_rn(c[k], B[(k * d_out + n) * r + j]));
      if (scale_b) acc = mul_rn(acc, b_scale);
    }
    b_hat[f] = acc;
  }
}

// lorahub with task ids, forward: h = Σ_k c_k H_k, S_k = (c_k s) h, in the CPU's order.
template <typename T>
__global__ void lorahub_rows_kernel(const T* __restrict__ H, CoeffRows<T> cf, int64_t M,
                                    int64_t r, T s, T* __restrict__ S, int64_t ld_s) {
  extern __shared__ unsigned char smem_raw[];
  T* h = reinterpret_cast<T*>(smem_raw);
  const int64_t K = cf.K, width = K * r;
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    const T* cm = cf.row(m);
    const T* Hm = H + m * width;
    for (int64_t j = threadIdx.x; j < r; j += blockDim.x) {
      T acc = T(0);
      if (cm) {
        for (int64_t k = 0; k < K; ++k) acc = add_rn(acc, mul_rn(cm[k], Hm[k * r + j]));
      } else {
        acc = detail::quiet_nan<T>();
      }
      h[j] = acc;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < ld_s; e += blockDim.x) {
      T v = T(0);
      if (e < width) v = cm ? mul_rn(mul_rn(cm[e / r], s), h[e % r]) : detail::quiet_nan<T>();
      S[m * ld_s + e] = v;
    }
    __syncthreads();
  }
}

// Backward per row (the CPU's backward_rows): from dS = G B_cat and H,
//   sum:     dH = (c s) ⊙ dS, dc_k = s Σ_j dS H, S = H (c s)
//   lorahub: h = Σ c_k H_k, dh = s Σ c_k dS_k, dH_k = c_k dh, dc_k = s <dS_k, h> + <dh, H_k>,
//            S_k = (c_k s) h.
// dH and S are written with leading dimension ld (zero padding); any output may be null.
template <typename T>
__global__ void backward_rows_kernel(const T* __restrict__ dS, int64_t ld_ds,
                                     const T* __restrict__ H, CoeffRows<T> cf, int64_t M,
                                     int64_t r, T s, bool lorahub, T* __restrict__ dH,
                                     T* __restrict__ dc_rows, T* __restrict__ S, int64_t ld) {
  extern __shared__ unsigned char smem_raw[];
  T* h = reinterpret_cast<T*>(smem_raw);
  T* dh = h + r;
  const int64_t K = cf.K, width = K * r;
  const T nan = detail::quiet_nan<T>();
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    const T* cm = cf.row(m);
    const T* Hm = H + m * width;
    const T* dSm = dS + m * ld_ds;
    if (lorahub) {
      for (int64_t j = threadIdx.x; j < r; j += blockDim.x) {
        T a = T(0), b = T(0);
        if (cm) {
          for (int64_t k = 0; k < K; ++k) {
            a = add_rn(a, mul_rn(cm[k], Hm[k * r + j]));
            b = add_rn(b, mul_rn(cm[k], dSm[k * r + j]));
          }
          b = mul_rn(b, s);
        } else {
          a = b = nan;
        }
        h[j] = a;
        dh[j] = b;
      }
      __syncthreads();
    }
    if (dc_rows) {
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        T out;
        if (!cm) {
          out = nan;
        } else if (!lorahub) {
          T acc = T(0);
          for (int64_t j = 0; j < r; ++j) acc = add_rn(acc, mul_rn(dSm[k * r + j], Hm[k * r + j]));
          out = mul_rn(acc, s);
        } else {
          T a = T(0), b = T(0);
          for (int64_t j = 0; j < r; ++j) {
            a = add_rn(a, mul_rn(dSm[k * r + j], h[j]));
            b = add_rn(b, mul_rn(dh[j], Hm[k * r + j]));
          }
          out = add_rn(mul_rn(a, s), b);
        }
        dc_rows[m * K + k] = out;
      }
    }
    for (int64_t e = threadIdx.x; e < ld; e += blockDim.x) {
      T vdh = T(0), vs = T(0);
      if (e < width) {
        const int64_t k = e / r, j = e % r;
        if (!cm) {
          vdh = vs = nan;
        } else if (!lorahub) {
          const T ck = mul_rn(cm[k], s);
          vdh = mul_rn(dSm[e], ck);
          vs = mul_rn(Hm[e], ck);
        } else {
          vdh = mul_rn(cm[k], dh[j]);
          vs = mul_rn(mul_rn(cm[k], s), h[j]);
        }
      }
      if (dH) dH[m * ld + e] = vdh;
      if (S) S[m * ld + e] = vs;
    }
    __syncthreads();
  }
}

// grad_coeffs[t, k] = Σ_{m: task(m) = t} dc_rows[m, k] (or Σ_m without tasks), in a fixed
// order: 8 row groups of strided m, then the groups in order. Deterministic (no atomics).
template <typename T>
__global__ void coeff_reduce_kernel(const T* __restrict__ dc_rows, const int64_t* __restrict__ ids,
                                    int64_t M, int64_t K, T* __restrict__ out) {
  __shared__ T part[8][32];
  const int kx = threadIdx.x % 32, ky = threadIdx.x / 32;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * 32 + kx;
  const int64_t t = blockIdx.y;
  T acc = T(0);
  if (k < K) {
    for (int64_t m = ky; m < M; m += 8) {
      if (ids && ids[m] != t) continue;
      acc = add_rn(acc, dc_rows[m * K + k]);
    }
  }
  part[ky][kx] = acc;
  __syncthreads();
  if (ky == 0 && k < K) {
    T v = part[0][kx];
    for (int g = 1; g < 8; ++g) v = add_rn(v, part[g][kx]);
    out[t * K + k] = v;
  }
}

// Merged backward: grad_c[k] = <A_k, dÂ> + <B_k, dB̂>; grad_A[k] = c_k dÂ; grad_B[k] = c_k dB̂.
template <typename T>
__global__ void merged_coeff_grad_kernel(const T* __restrict__ A, const T* __restrict__ B,
                                         const T* __restrict__ da, const T* __restrict__ db,
                                         int64_t na, int64_t nb, T* __restrict__ gc) {
  __shared__ T red[2][256];
  const int64_t k = blockIdx.x;
  T sa = T(0), sb = T(0);
  for (int64_t e = threadIdx.x; e < na; e += blockDim.x) sa = add_rn(sa, mul_rn(A[k * na + e], da[e]));
  for (int64_t e = threadIdx.x; e < nb; e += blockDim.x) sb = add_rn(sb, mul_rn(B[k * nb + e], db[e]));
  red[0][threadIdx.x] = sa;
  red[1][threadIdx.x] = sb;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
      red[0][threadIdx.x] = add_rn(red[0][threadIdx.x], red[0][threadIdx.x + w]);
      red[1][threadIdx.x] = add_rn(red[1][threadIdx.x], red[1][threadIdx.x + w]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) gc[k] = add_rn(red[0][0], red[1][0]);
}

template <typename T>
__global__ void outer_kernel(const T* __restrict__ c, const T* __restrict__ v, int64_t K,
                             int64_t n, T* __restrict__ out) {
  const int64_t total = K * n;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] = mul_rn(c[e / n], v[e % n]);
}

int blocks_for(int64_t n, int threads = 256) { return grid_cap(ceil_div(n, threads), 8192); }

// ---------------------------------------------------------------- workspace layouts
struct Dims {
  int64_t M, d_in, K, r, d_out, width, ld_w, ld_r, ld_out, ld_m;
};
Dims dims_of(const PoolShape& s) {
  const int64_t width = s.K * s.r;
  return {s.M, s.d_in, s.K, s.r, s.d_out, width, round_up(width, 4), round_up(s.r, 4),
          round_up(s.d_out, 4), round_up(s.M, 4)};
}

template <typename T>
struct ForwardBufs {
  T *S, *b_cat, *a_hat, *b_hat, *h_pad;
};
template <typename T>
ForwardBufs<T> carve_forward(Carver& c, const PoolShape& s) {
  const Dims d = dims_of(s);
  ForwardBufs<T> b{};
  if (pool_is_merged(s.mode, s.has_task_ids)) {
    b.a_hat = c.take<T>(d.r * d.d_in);
    b.b_hat = c.take<T>(d.d_out * d.ld_r);
    b.h_pad = c.take<T>(d.M * d.ld_r);
  } else {
    b.S = c.take<T>(d.M * d.ld_w);
    b.b_cat = c.take<T>(d.d_out * d.ld_w);
  }
  return b;
}

template <typename T>
struct BackwardBufs {
  T *a_hat, *b_hatT, *a_hatT, *dh, *dhT, *xT, *gT, *hT, *da, *db;  // merged
  T *bT, *dS, *dH, *S, *dc_rows, *AT, *dHT, *ST;                  // stacked
};
template <typename T>
BackwardBufs<T> carve_backward(Carver& c, const PoolShape& s, bool need_x, bool need_c,
                               bool need_A, bool need_B) {
  const Dims d = dims_of(s);
  BackwardBufs<T> b{};
  const bool need_xT = need_A || (pool_is_merged(s.mode, s.has_task_ids) && need_c);
  if (pool_is_merged(s.mode, s.has_task_ids)) {
    const bool need_da = need_c || need_A, need_db = need_c || need_B;
    b.a_hat = c.take<T>(d.r * d.d_in);
    b.b_hatT = c.take<T>(d.r * d.ld_out);
    b.dh = c.take<T>(d.M * d.ld_r);
    if (need_x) b.a_hatT = c.take<T>(d.d_in * d.ld_r);
    if (need_da) {
      b.dhT = c.take<T>(d.r * d.ld_m);
      b.da = c.take<T>(d.r * d.d_in);
    }
    if (need_da) b.xT = c.take<T>(d.d_in * d.ld_m);
    if (need_db) {
      b.gT = c.take<T>(d.d_out * d.ld_m);
      b.hT = c.take<T>(d.r * d.ld_m);
      b.db = c.take<T>(d.d_out * d.r);
    }
    return b;
  }
  b.bT = c.take<T>(d.width * d.ld_out);
  b.dS = c.take<T>(d.M * d.ld_w);
  if (need_x || need_A) b.dH = c.take<T>(d.M * d.ld_w);
  if (need_B) {
    b.S = c.take<T>(d.M * d.ld_w);
    b.ST = c.take<T>(d.width * d.ld_m);
    b.gT = c.take<T>(d.d_out * d.ld_m);
  }
  if (need_c) b.dc_rows = c.take<T>(d.M * d.K);
  if (need_x) b.AT = c.take<T>(d.d_in * d.ld_w);
  if (need_A) b.dHT = c.take<T>(d.width * d.ld_m);
  if (need_xT) b.xT = c.take<T>(d.d_in * d.ld_m);
  return b;
}

}  // namespace

size_t pool_forward_workspace_bytes(const PoolShape& shape, size_t elem_size) {
  Carver c{nullptr};
  if (elem_size == sizeof(double)) {
    carve_forward<double>(c, shape);
  } else {
    carve_forward<float>(c, shape);
  }
  return c.used;
}

size_t pool_backward_workspace_bytes(const PoolShape& shape, size_t elem_size, bool need_x,
                                     bool need_coeffs, bool need_A, bool need_B) {
  Carver c{nullptr};
  if (elem_size == sizeof(double)) {
    carve_backward<double>(c, shape, need_x, need_coeffs, need_A, need_B);
  } else {
    carve_backward<float>(c, shape, need_x, need_coeffs, need_A, need_B);
  }
  return c.used;
}

template <typename T>
cudaError_t pool_forward(const PoolArgs<T>& a, T* y, T* hidden, bool allow_tf32, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  const PoolShape& sh = a.shape;
  const Dims d = dims_of(sh);
  if (d.M <= 0) return cudaSuccess;
  if (workspace_bytes < pool_forward_workspace_bytes(sh, sizeof(T))) return cudaErrorInvalidValue;
  Carver c{static_cast<char*>(workspace)};
  const ForwardBufs<T> b = carve_forward<T>(c, sh);
  const T s = static_cast<T>(a.scale);
  if (pool_is_merged(sh.mode, sh.has_task_ids)) {
    // The published composition (Σ c B)(Σ c A): a rank-r LoRA, two thin GEMMs.
    merge_kernel<T><<<blocks_for(d.r * d.d_in + d.d_out * d.ld_r), 256, 0, stream>>>(
        a.A, a.B, a.coeffs, d.K, d.r, d.d_in, d.d_out, b.a_hat, b.b_hat, d.ld_r, false, true, s);
    LF_CUDA_TRY(cudaGetLastError());
    LF_CUDA_TRY(cudaMemsetAsync(b.h_pad, 0, sizeof(T) * d.M * d.ld_r, stream));
    DualStoreEpilogue<T> e1{hidden, d.r, b.h_pad, d.ld_r};
    LF_CUDA_TRY(launch_gemm_nt<T>(a.x, b.a_hat, GemmShape{d.M, nullptr, d.r, d.d_in, d.d_in, d.d_in},
                                  d.M, allow_tf32, e1, stream));
    StoreEpilogue<T> e2{y, d.d_out, T(1), false};
    return launch_gemm_nt<T>(b.h_pad, b.b_hat,
                             GemmShape{d.M, nullptr, d.d_out, d.ld_r, d.ld_r, d.ld_r}, d.M,
                             allow_tf32, e2, stream);
  }
  const CoeffRows<T> cf{a.coeffs, sh.has_task_ids ? a.task_ids : nullptr, d.K, sh.n_tasks};
  const bool sum_mode = sh.mode == PoolModeCode::kSum;
  stack_b_kernel<T><<<blocks_for(d.d_out * d.ld_w), 256, 0, stream>>>(a.B, d.K, d.d_out, d.r,
                                                                       b.b_cat, d.ld_w, false);
  LF_CUDA_TRY(cudaGetLastError());
  // The padding columns of S must be zero for the expand GEMM (the epilogue writes < width).
  if (d.ld_w != d.width) LF_CUDA_TRY(cudaMemsetAsync(b.S, 0, sizeof(T) * d.M * d.ld_w, stream));
  ShrinkEpilogue<T> e1{cf, d.r, d.width, d.ld_w, s, sum_mode, hidden, b.S};
  LF_CUDA_TRY(launch_gemm_nt<T>(a.x, a.A, GemmShape{d.M, nullptr, d.width, d.d_in, d.d_in, d.d_in},
                                d.M, allow_tf32, e1, stream));
  if (!sum_mode) {
    lorahub_rows_kernel<T><<<grid_cap(d.M, 65535), 128, sizeof(T) * d.r, stream>>>(
        hidden, cf, d.M, d.r, s, b.S, d.ld_w);
    LF_CUDA_TRY(cudaGetLastError());
  }
  StoreEpilogue<T> e2{y, d.d_out, T(1), false};
  return launch_gemm_nt<T>(b.S, b.b_cat, GemmShape{d.M, nullptr, d.d_out, d.ld_w, d.ld_w, d.ld_w},
                           d.M, allow_tf32, e2, stream);
}

template <typename T>
cudaError_t pool_backward(const PoolArgs<T>& a, const T* grad_y, const T* hidden, T* grad_x,
                          T* grad_coeffs, T* grad_A, T* grad_B, bool allow_tf32, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream) {
  const PoolShape& sh = a.shape;
  const Dims d = dims_of(sh);
  const bool need_x = grad_x, need_c = grad_coeffs, need_A = grad_A, need_B = grad_B;
  if (workspace_bytes < pool_backward_workspace_bytes(sh, sizeof(T), need_x, need_c, need_A, need_B))
    return cudaErrorInvalidValue;
  if (d.M <= 0) {
    // No tokens: every requested gradient is zero.
    if (need_c) LF_CUDA_TRY(cudaMemsetAsync(grad_coeffs, 0, sizeof(T) * sh.n_tasks * d.K, stream));
    if (need_A) LF_CUDA_TRY(cudaMemsetAsync(grad_A, 0, sizeof(T) * d.width * d.d_in, stream));
    if (need_B) LF_CUDA_TRY(cudaMemsetAsync(grad_B, 0, sizeof(T) * d.width * d.d_out, stream));
    return cudaSuccess;
  }
  Carver c{static_cast<char*>(workspace)};
  const BackwardBufs<T> b = carve_backward<T>(c, sh, need_x, need_c, need_A, need_B);
  const T s = static_cast<T>(a.scale);

  if (pool_is_merged(sh.mode, sh.has_task_ids)) {
    const bool need_da = need_c || need_A, need_db = need_c || need_B;
    // Â [r, d_in] and the unscaled B̂ transposed [r, ld_out] (for dh = G B̂ in NT form).
    merge_kernel<T><<<blocks_for(d.r * d.d_in + d.r * d.ld_out), 256, 0, stream>>>(
        a.A, a.B, a.coeffs, d.K, d.r, d.d_in, d.d_out, b.a_hat, b.b_hatT, d.ld_out, true, false,
        T(1));
    LF_CUDA_TRY(cudaGetLastError());
    LF_CUDA_TRY(cudaMemsetAsync(b.dh, 0, sizeof(T) * d.M * d.ld_r, stream));
    StoreEpilogue<T> edh{b.dh, d.ld_r, s, true};  // dh = (G B̂) * s
    LF_CUDA_TRY(launch_gemm_nt<T>(grad_y, b.b_hatT,
                                  GemmShape{d.M, nullptr, d.r, d.d_out, d.d_out, d.ld_out}, d.M,
                                  allow_tf32, edh, stream));
    if (need_x) {
      LF_CUDA_TRY(launch_transpose<T>(b.a_hat, d.r, d.d_in, d.d_in, b.a_hatT, d.ld_r, d.ld_r, stream));
      StoreEpilogue<T> ex{grad_x, d.d_in, T(1), false};
      LF_CUDA_TRY(launch_gemm_nt<T>(b.dh, b.a_hatT,
                                    GemmShape{d.M, nullptr, d.d_in, d.ld_r, d.ld_r, d.ld_r}, d.M,
                                    allow_tf32, ex, stream));
    }
    if (need_da) {  // dÂ = dhᵀ x [r, d_in]
      LF_CUDA_TRY(launch_transpose<T>(b.dh, d.M, d.r, d.ld_r, b.dhT, d.ld_m, d.ld_m, stream));
      LF_CUDA_TRY(launch_transpose<T>(a.x, d.M, d.d_in, d.d_in, b.xT, d.ld_m, d.ld_m, stream));
      StoreEpilogue<T> eda{b.da, d.d_in, T(1), false};
      LF_CUDA_TRY(launch_gemm_nt<T>(b.dhT, b.xT,
                                    GemmShape{d.r, nullptr, d.d_in, d.ld_m, d.ld_m, d.ld_m}, d.r,
                                    allow_tf32, eda, stream));
    }
    if (need_db) {  // dB̂ = (Gᵀ h) * s [d_out, r]
      LF_CUDA_TRY(launch_transpose<T>(grad_y, d.M, d.d_out, d.d_out, b.gT, d.ld_m, d.ld_m, stream));
      LF_CUDA_TRY(launch_transpose<T>(hidden, d.M, d.r, d.r, b.hT, d.ld_m, d.ld_m, stream));
      StoreEpilogue<T> edb{b.db, d.r, s, true};
      LF_CUDA_TRY(launch_gemm_nt<T>(b.gT, b.hT,
                                    GemmShape{d.d_out, nullptr, d.r, d.ld_m, d.ld_m, d.ld_m},
                                    d.d_out, allow_tf32, edb, stream));
    }
    if (need_c) {
      merged_coeff_grad_kernel<T><<<static_cast<unsigned>(d.K), 256, 0, stream>>>(
          a.A, a.B, b.da, b.db, d.r * d.d_in, d.d_out * d.r, grad_coeffs);
      LF_CUDA_TRY(cudaGetLastError());
    }
    if (need_A) {
      outer_kernel<T><<<blocks_for(d.K * d.r * d.d_in), 256, 0, stream>>>(a.coeffs, b.da, d.K,
                                                                         d.r * d.d_in, grad_A);
      LF_CUDA_TRY(cudaGetLastError());
    }
    if (need_B) {
      outer_kernel<T><<<blocks_for(d.K * d.d_out * d.r), 256, 0, stream>>>(a.coeffs, b.db, d.K,
                                                                          d.d_out * d.r, grad_B);
      LF_CUDA_TRY(cudaGetLastError());
    }
    return cudaSuccess;
  }

  const CoeffRows<T> cf{a.coeffs, sh.has_task_ids ? a.task_ids : nullptr, d.K, sh.n_tasks};
  const bool lorahub = sh.mode == PoolModeCode::kLoraHub;
  const bool rows_needed = need_x || need_A || need_c;
  if (rows_needed || need_B) {
    if (rows_needed) {
      // dS = G B_cat [M, K·r]: NT form with B_catᵀ [K·r, ld_out].
      stack_b_kernel<T><<<blocks_for(d.width * d.ld_out), 256, 0, stream>>>(
          a.B, d.K, d.d_out, d.r, b.bT, d.ld_out, true);
      LF_CUDA_TRY(cudaGetLastError());
      StoreEpilogue<T> eds{b.dS, d.ld_w, T(1), false};
      LF_CUDA_TRY(launch_gemm_nt<T>(grad_y, b.bT,
                                    GemmShape{d.M, nullptr, d.width, d.d_out, d.d_out, d.ld_out},
                                    d.M, allow_tf32, eds, stream));
    }
    // Without dS (only grad_B asked) the row kernel still yields S: dS is then unused, so it
    // is fed H (any finite input of the right shape) and dH / dc are not written.
    const T* ds = rows_needed ? b.dS : hidden;
    const int64_t ld_ds = rows_needed ? d.ld_w : d.width;
    const size_t smem = sizeof(T) * 2 * d.r;
    backward_rows_kernel<T><<<grid_cap(d.M, 65535), 128, smem, stream>>>(
        ds, ld_ds, hidden, cf, d.M, d.r, s, lorahub, (need_x || need_A) ? b.dH : nullptr,
        need_c ? b.dc_rows : nullptr, need_B ? b.S : nullptr, d.ld_w);
    LF_CUDA_TRY(cudaGetLastError());
  }
  if (need_x) {  // grad_x = dH A_cat: NT form with A_catᵀ [d_in, ld_w]
    LF_CUDA_TRY(launch_transpose<T>(a.A, d.width, d.d_in, d.d_in, b.AT, d.ld_w, d.ld_w, stream));
    StoreEpilogue<T> ex{grad_x, d.d_in, T(1), false};
    LF_CUDA_TRY(launch_gemm_nt<T>(b.dH, b.AT,
                                  GemmShape{d.M, nullptr, d.d_in, d.ld_w, d.ld_w, d.ld_w}, d.M,
                                  allow_tf32, ex, stream));
  }
  if (need_A) {  // grad_A = dHᵀ x [K·r, d_in]
    LF_CUDA_TRY(launch_transpose<T>(b.dH, d.M, d.width, d.ld_w, b.dHT, d.ld_m, d.ld_m, stream));
    LF_CUDA_TRY(launch_transpose<T>(a.x, d.M, d.d_in, d.d_in, b.xT, d.ld_m, d.ld_m, stream));
    StoreEpilogue<T> ea{grad_A, d.d_in, T(1), false};
    LF_CUDA_TRY(launch_gemm_nt<T>(b.dHT, b.xT,
                                  GemmShape{d.width, nullptr, d.d_in, d.ld_m, d.ld_m, d.ld_m},
                                  d.width, allow_tf32, ea, stream));
  }
  if (need_B) {  // grad_B = Gᵀ S [d_out, K·r], permuted into [K, d_out, r] by the epilogue
    LF_CUDA_TRY(launch_transpose<T>(grad_y, d.M, d.d_out, d.d_out, b.gT, d.ld_m, d.ld_m, stream));
    LF_CUDA_TRY(launch_transpose<T>(b.S, d.M, d.width, d.ld_w, b.ST, d.ld_m, d.ld_m, stream));
    GradBEpilogue<T> eb{grad_B, d.r, d.d_out};
    LF_CUDA_TRY(launch_gemm_nt<T>(b.gT, b.ST,
                                  GemmShape{d.d_out, nullptr, d.width, d.ld_m, d.ld_m, d.ld_m},
                                  d.d_out, allow_tf32, eb, stream));
  }
  if (need_c) {
    const dim3 grid(static_cast<unsigned>(ceil_div(d.K, 32)),
                    static_cast<unsigned>(sh.has_task_ids ? sh.n_tasks : 1));
    coeff_reduce_kernel<T><<<grid, 256, 0, stream>>>(
        b.dc_rows, sh.has_task_ids ? a.task_ids : nullptr, d.M, d.K, grad_coeffs);
    LF_CUDA_TRY(cudaGetLastError());
  }
  return cudaSuccess;
}

#define LF_INSTANTIATE(T)                                                                   \
  template cudaError_t pool_forward<T>(const PoolArgs<T>&, T*, T*, bool, void*, size_t,     \
                                       cudaStream_t);                                       \
  template cudaError_t pool_backward<T>(const PoolArgs<T>&, const T*, const T*, T*, T*, T*, \
                                        T*, bool, void*, size_t, cudaStream_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lorafusion::cuda
