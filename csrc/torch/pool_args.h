// Validation of pool_fusion's arguments, shared by the CPU and CUDA registrations so that
// both reject the same inputs with the same messages (each adds its device rules).
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "checks.h"

namespace lorafusion {

inline constexpr const char* kPoolOp = "lorafusion::pool_fusion";

// What the checks established about a call.
struct PoolShapeArgs {
  int64_t M, d_in, K, r, d_out, n_tasks;
  bool lorahub;
  bool has_task_ids;
};

// Dtypes, shapes, contiguity, same-device rules, mode and scale; `check_task_range` reads the
// task ids' min/max back to the host (a sync that graph capture forbids).
inline PoolShapeArgs check_pool_inputs(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                                       const at::Tensor& coeffs,
                                       const std::optional<at::Tensor>& task_ids, double scale,
                                       const std::string& mode, bool check_task_range) {
  TORCH_CHECK(mode == "sum" || mode == "lorahub", kPoolOp, ": mode = '", mode,
              "'; expected 'sum' or 'lorahub'");
  const bool lorahub = mode == "lorahub";
  TORCH_CHECK(std::isfinite(scale), kPoolOp, ": scale = ", scale, "; expected a finite number (alpha / r)");
  checks::floating(x, kPoolOp, "x");
  checks::dims(x, 2, kPoolOp, "x", "[tokens, d_in]");
  checks::contiguous(x, kPoolOp, "x");

  checks::dims(A, 3, kPoolOp, "A", "[K, r, d_in] (the pool's down projections)");
  checks::same_dtype(A, x, kPoolOp, "A", "x");
  checks::same_device(A, x, kPoolOp, "A", "x");
  checks::contiguous(A, kPoolOp, "A");
  TORCH_CHECK(A.size(0) > 0 && A.size(1) > 0, kPoolOp, ": A has shape ", A.sizes(),
              "; expected K >= 1 adapters of rank r >= 1");
  checks::size(A, 2, x.size(1), kPoolOp, "A", "d_in, the last dim of x");
  const int64_t K = A.size(0), r = A.size(1);

  checks::dims(B, 3, kPoolOp, "B", "[K, d_out, r] (the pool's up projections)");
  checks::same_dtype(B, x, kPoolOp, "B", "x");
  checks::same_device(B, x, kPoolOp, "B", "x");
  checks::contiguous(B, kPoolOp, "B");
  checks::size(B, 0, K, kPoolOp, "B", "K, the number of adapters in A");
  checks::size(B, 2, r, kPoolOp, "B", "r, the rank of A");
  TORCH_CHECK(B.size(1) > 0, kPoolOp, ": B has shape ", B.sizes(), "; expected d_out >= 1");

  checks::same_dtype(coeffs, x, kPoolOp, "coeffs", "x");
  checks::same_device(coeffs, x, kPoolOp, "coeffs", "x");
  checks::contiguous(coeffs, kPoolOp, "coeffs");
  PoolShapeArgs shape{x.size(0), x.size(1), K, r, B.size(1), 1, lorahub, task_ids.has_value()};
  if (task_ids) {
    checks::dims(coeffs, 2, kPoolOp, "coeffs", "a table [T, K] when task_ids is given");
    TORCH_CHECK(coeffs.size(0) > 0, kPoolOp, ": coeffs has shape ", coeffs.sizes(),
                "; expected at least one task row");
    checks::size(coeffs, 1, K, kPoolOp, "coeffs", "K, the number of adapters in A");
    TORCH_CHECK(task_ids->scalar_type() == at::kLong, kPoolOp, ": task_ids has dtype ",
                task_ids->scalar_type(), "; expected int64");
    checks::same_device(*task_ids, x, kPoolOp, "task_ids", "x");
    checks::contiguous(*task_ids, kPoolOp, "task_ids");
    TORCH_CHECK(task_ids->dim() == 1 && task_ids->size(0) == x.size(0), kPoolOp,
                ": task_ids has shape ", task_ids->sizes(), "; expected [", x.size(0),
                "] (one task per row of x)");
    if (check_task_range && task_ids->numel() > 0) {
      const int64_t lo = task_ids->min().item<int64_t>(), hi = task_ids->max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < coeffs.size(0), kPoolOp, ": task_ids holds values in [", lo, ", ",
                  hi, "]; expected indices into the ", coeffs.size(0),
                  " rows of coeffs, in [0, ", coeffs.size(0) - 1, "]");
    }
    shape.n_tasks = coeffs.size(0);
  } else {
    TORCH_CHECK(coeffs.dim() == 1 && coeffs.size(0) == K, kPoolOp, ": coeffs has shape ",
                coeffs.sizes(), "; expected [", K,
                "] (one coefficient per adapter), or a [T, K] table with task_ids");
  }
  return shape;
}

// The backward's own arguments: grad_y [M, d_out] and the forward's `hidden` [M, hidden_width]
// (hidden_width: r when the kernel merges the pool, else K * r; the kernel's own rule).
inline void check_pool_backward_inputs(const at::Tensor& grad_y, const at::Tensor& hidden, const at::Tensor& x,
                                       const PoolShapeArgs& a, int64_t hidden_width) {
  checks::same_dtype(grad_y, x, kPoolOp, "grad_y", "x");
  checks::same_device(grad_y, x, kPoolOp, "grad_y", "x");
  checks::contiguous(grad_y, kPoolOp, "grad_y");
  TORCH_CHECK(grad_y.dim() == 2 && grad_y.size(0) == a.M && grad_y.size(1) == a.d_out, kPoolOp,
              ": grad_y has shape ", grad_y.sizes(), "; expected [", a.M, ", ", a.d_out, "]");
  checks::same_dtype(hidden, x, kPoolOp, "hidden", "x");
  checks::same_device(hidden, x, kPoolOp, "hidden", "x");
  checks::contiguous(hidden, kPoolOp, "hidden");
  TORCH_CHECK(hidden.dim() == 2 && hidden.size(0) == a.M && hidden.size(1) == hidden_width, kPoolOp,
              ": hidden has shape ", hidden.sizes(), "; expected [", a.M, ", ", hidden_width,
              "] (the second output of the forward)");
}

}  // namespace lorafusion
