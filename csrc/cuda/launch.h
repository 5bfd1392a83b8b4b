// Plain C++ launch API of the lorafusion CUDA kernels: raw device pointers, sizes, the
// parameter structs of lorafusion/params.h and a cudaStream_t. No torch here (docs/architecture.md):
// csrc/torch/cuda/*.cpp checks the tensors and calls these functions.
//
// Conventions
// - Every pointer is a device pointer unless said otherwise; tensors are contiguous row-major.
// - The noise key (seed, offset) is read by the kernels from `rng`, a device int64[2], never
//   passed by value: a captured CUDA graph then draws fresh noise at every replay once the
//   caller bumps the offset in place.
// - Scratch memory comes from the caller (`workspace`, at least `*_workspace_bytes(...)`
//   bytes, any 256-byte aligned allocation): the kernels never allocate, so the torch glue
//   can use the caching allocator and the calls are graph-capturable (no host sync anywhere:
//   bound management decides on the device).
// - Functions return the first CUDA error they meet (cudaSuccess otherwise); the caller turns
//   it into an exception.
#pragma once
#include <cuda_runtime_api.h>
#include <lorafusion/params.h>

#include <cstddef>
#include <cstdint>

namespace lorafusion::cuda {

// ---------------------------------------------------------------- crossbar_mvm (docs/numerics.md)
template <typename T>
struct CrossbarForwardArgs {
  const T* x = nullptr;           // [M, K]
  const T* weight = nullptr;      // [N, K], normalised per tile row
  const T* out_scales = nullptr;  // [S, Tin, N] digital scales, applied in order
  int64_t n_scales = 0;           // S
  const T* bias = nullptr;        // [N] or null
  const int64_t* rng = nullptr;   // device int64[2] = (seed, offset)
  const T* noise_out = nullptr;   // test-only [max_passes, Tin, M, N] standard normals, or null
  const T* noise_weight = nullptr;  // test-only [N, K] standard normals, or null
  const T* input_range = nullptr;   // [Tin, Tout] learned input ranges (calls without gradient), or null
  int64_t M = 0, K = 0, N = 0;
  // outputs
  T* y = nullptr;           // [M, N], or [Tin, M, N] with params.per_input_tile
  T* s = nullptr;           // [T, M] input scale of each row's last pass, T = Tin * Tout
  bool* mask = nullptr;     // [Tin, M, N] ADC clamp inactive, or null (no aux)
  int32_t* passes = nullptr;  // [T, M]
};

template <typename T>
struct CrossbarBackwardArgs {
  const T* grad_y = nullptr;      // the shape of the forward y
  const T* x = nullptr;           // [M, K]
  const T* weight = nullptr;      // [N, K]
  const T* out_scales = nullptr;  // [S, Tin, N]
  int64_t n_scales = 0;
  const int64_t* rng = nullptr;   // device int64[2], the (seed, offset) of the forward
  const T* s = nullptr;           // [T, M] from the forward
  const bool* mask = nullptr;     // [Tin, M, N] from the forward
  const T* noise_weight = nullptr;  // test-only [N, K], or null
  int64_t M = 0, K = 0, N = 0;
  T* grad_x = nullptr;  // [M, K] or null (not needed)
  T* grad_w = nullptr;  // [N, K] or null (not needed)
};

size_t crossbar_forward_workspace_bytes(int64_t M, int64_t K, int64_t N, const CrossbarParams& p,
                                        size_t elem_size);
size_t crossbar_backward_workspace_bytes(int64_t M, int64_t K, int64_t N,
                                         const CrossbarParams& p, size_t elem_size,
                                         bool need_grad_x, bool need_grad_w);

// `allow_tf32` (float only): the tile GEMMs run on tensor cores in TF32 (the caller passes
// torch.backends.cuda.matmul.allow_tf32); otherwise exact fp32 FMA tiles.
template <typename T>
cudaError_t crossbar_forward(const CrossbarForwardArgs<T>& args, const CrossbarParams& p,
                             bool training, bool allow_tf32, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

template <typename T>
cudaError_t crossbar_backward(const CrossbarBackwardArgs<T>& args, const CrossbarParams& p,
                              bool training, bool allow_tf32, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream);

// ---------------------------------------------------------------- philox_normal
// out[i] = the standard normal of element start + i of stream (stream, pass, tile) under the
// (seed, offset) in rng: bit for bit what the CPU's lorafusion::philox_normal returns.
cudaError_t philox_normal(const int64_t* rng, uint32_t stream_id, uint32_t pass_index,
                          uint32_t tile, uint64_t start, int64_t count, float* out,
                          cudaStream_t stream);

// ---------------------------------------------------------------- pool_fusion (docs/numerics.md)
enum class PoolModeCode : int32_t { kSum = 0, kLoraHub = 1 };

// lorahub with one shared coefficient vector merges the pool (hidden = h [M, r]); every other
// case keeps the stacked hidden state H = x A_catᵀ [M, K·r].
inline bool pool_is_merged(PoolModeCode mode, bool has_task_ids) {
  return mode == PoolModeCode::kLoraHub && !has_task_ids;
}

struct PoolShape {
  int64_t M = 0, d_in = 0, K = 0, r = 0, d_out = 0;
  int64_t n_tasks = 1;        // rows of the coefficient table (1 without task_ids)
  bool has_task_ids = false;
  PoolModeCode mode = PoolModeCode::kLoraHub;
};

template <typename T>
struct PoolArgs {
  const T* x = nullptr;       // [M, d_in]
  const T* A = nullptr;       // [K, r, d_in]
  const T* B = nullptr;       // [K, d_out, r]
  const T* coeffs = nullptr;  // [K], or [n_tasks, K] with task_ids
  const int64_t* task_ids = nullptr;  // [M] or null; a row whose id is outside [0, n_tasks)
                                      // gives NaN outputs (never an out-of-bounds read)
  PoolShape shape;
  double scale = 1.0;         // alpha / r
};

// Forward outputs: y [M, d_out] and hidden: h [M, r] when merged, else H = x A_catᵀ [M, K·r].
size_t pool_forward_workspace_bytes(const PoolShape& shape, size_t elem_size);
template <typename T>
cudaError_t pool_forward(const PoolArgs<T>& args, T* y, T* hidden, bool allow_tf32,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Backward: grad_y [M, d_out], hidden from the forward; outputs (null: not needed):
// grad_x [M, d_in], grad_coeffs like coeffs, grad_A [K, r, d_in], grad_B [K, d_out, r].
size_t pool_backward_workspace_bytes(const PoolShape& shape, size_t elem_size, bool need_x,
                                     bool need_coeffs, bool need_A, bool need_B);
template <typename T>
cudaError_t pool_backward(const PoolArgs<T>& args, const T* grad_y, const T* hidden, T* grad_x,
                          T* grad_coeffs, T* grad_A, T* grad_B, bool allow_tf32, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream);

}  // namespace lorafusion::cuda
