// CPU pooled LoRA fusion (ATen + at::parallel_for). See docs/numerics.md, "Pooled LoRA fusion".
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace lorafusion::cpu {

enum class PoolMode : int { kSum = 0, kLoraHub = 1 };

// True when the forward merges the pool (lorahub with one coefficient vector): the hidden
// state is then h = x Âᵀ [M, r]; otherwise it is H = x A_catᵀ [M, K·r].
inline bool pool_merged(PoolMode mode, bool has_task_ids) {
  return mode == PoolMode::kLoraHub && !has_task_ids;
}

// x [M, d_in], A [K, r, d_in], B [K, d_out, r], coeffs [K] (shared) or [T, K] with
// task_ids int64 [M] (per row). Returns (Δy [M, d_out], hidden) where hidden is what the
// backward needs (see pool_merged).
std::tuple<at::Tensor, at::Tensor> pool_fusion_forward(const at::Tensor& x, const at::Tensor& A,
                                                       const at::Tensor& B,
                                                       const at::Tensor& coeffs,
                                                       const std::optional<at::Tensor>& task_ids,
                                                       double scale, PoolMode mode);

// Gradients (x [M, d_in], coeffs like coeffs, A [K, r, d_in], B [K, d_out, r]); an output
// not asked for is an undefined tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pool_fusion_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids, const at::Tensor& hidden,
    double scale, PoolMode mode, bool need_x, bool need_coeffs, bool need_A, bool need_B);

}  // namespace lorafusion::cpu
