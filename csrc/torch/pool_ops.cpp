// Schemas, argument checks and CPU registration of pool_fusion and its backward.
#include <torch/library.h>

#include <cmath>
#include <string>

#include "../cpu/pool_fusion.h"
#include "checks.h"

namespace lorafusion {
namespace {

constexpr const char* kOp = "lorafusion::pool_fusion";

cpu::PoolMode parse_mode(const std::string& mode) {
  if (mode == "sum") return cpu::PoolMode::kSum;
  if (mode == "lorahub") return cpu::PoolMode::kLoraHub;
  TORCH_CHECK(false, kOp, ": mode = '", mode, "'; expected 'sum' or 'lorahub'");
}

// Checks shared by forward and backward; returns the mode.
cpu::PoolMode check_inputs(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids,
                           double scale, const std::string& mode) {
  const cpu::PoolMode pm = parse_mode(mode);
  TORCH_CHECK(std::isfinite(scale), kOp, ": scale = ", scale, "; expected a finite number (alpha / r)");
  checks::floating(x, kOp, "x");
  checks::dims(x, 2, kOp, "x", "[tokens, d_in]");
  checks::contiguous(x, kOp, "x");
  TORCH_CHECK(x.device().is_cpu(), kOp, ": x is on ", x.device(), "; expected a CPU tensor");

  checks::dims(A, 3, kOp, "A", "[K, r, d_in] (the pool's down projections)");
  checks::same_dtype(A, x, kOp, "A", "x");
  checks::same_device(A, x, kOp, "A", "x");
  checks::contiguous(A, kOp, "A");
  TORCH_CHECK(A.size(0) > 0 && A.size(1) > 0, kOp, ": A has shape ", A.sizes(),
              "; expected K >= 1 adapters of rank r >= 1");
  checks::size(A, 2, x.size(1), kOp, "A", "d_in, the last dim of x");
  const int64_t K = A.size(0), r = A.size(1);

  checks::dims(B, 3, kOp, "B", "[K, d_out, r] (the pool's up projections)");
  checks::same_dtype(B, x, kOp, "B", "x");
  checks::same_device(B, x, kOp, "B", "x");
  checks::contiguous(B, kOp, "B");
  checks::size(B, 0, K, kOp, "B", "K, the number of adapters in A");
  checks::size(B, 2, r, kOp, "B", "r, the rank of A");
  TORCH_CHECK(B.size(1) > 0, kOp, ": B has shape ", B.sizes(), "; expected d_out >= 1");

  checks::same_dtype(coeffs, x, kOp, "coeffs", "x");
  checks::same_device(coeffs, x, kOp, "coeffs", "x");
  checks::contiguous(coeffs, kOp, "coeffs");
  if (task_ids) {
    checks::dims(coeffs, 2, kOp, "coeffs", "a table [T, K] when task_ids is given");
    TORCH_CHECK(coeffs.size(0) > 0, kOp, ": coeffs has shape ", coeffs.sizes(),
                "; expected at least one task row");
    checks::size(coeffs, 1, K, kOp, "coeffs", "K, the number of adapters in A");
    TORCH_CHECK(task_ids->scalar_type() == at::kLong, kOp, ": task_ids has dtype ",
                task_ids->scalar_type(), "; expected int64");
    checks::same_device(*task_ids, x, kOp, "task_ids", "x");
    checks::contiguous(*task_ids, kOp, "task_ids");
    TORCH_CHECK(task_ids->dim() == 1 && task_ids->size(0) == x.size(0), kOp,
                ": task_ids has shape ", task_ids->sizes(), "; expected [", x.size(0),
                "] (one task per row of x)");
    if (task_ids->numel() > 0) {
      const int64_t lo = task_ids->min().item<int64_t>(), hi = task_ids->max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < coeffs.size(0), kOp, ": task_ids holds values in [", lo, ", ",
                  hi, "]; expected indices into the ", coeffs.size(0),
                  " rows of coeffs, in [0, ", coeffs.size(0) - 1, "]");
    }
  } else {
    TORCH_CHECK(coeffs.dim() == 1 && coeffs.size(0) == K, kOp, ": coeffs has shape ",
                coeffs.sizes(), "; expected [", K,
                "] (one coefficient per adapter), or a [T, K] table with task_ids");
  }
  return pm;
}

std::tuple<at::Tensor, at::Tensor> pool_fusion_cpu(const at::Tensor& x, const at::Tensor& A,
                                                   const at::Tensor& B, const at::Tensor& coeffs,
                                                   const std::optional<at::Tensor>& task_ids,
                                                   double scale, c10::string_view mode) {
  const std::string m(mode);
  const cpu::PoolMode pm = check_inputs(x, A, B, coeffs, task_ids, scale, m);
  return cpu::pool_fusion_forward(x, A, B, coeffs, task_ids, scale, pm);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pool_fusion_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids, const at::Tensor& hidden,
    double scale, c10::string_view mode, bool need_x, bool need_coeffs, bool need_A,
    bool need_B) {
  const std::string m(mode);
  const cpu::PoolMode pm = check_inputs(x, A, B, coeffs, task_ids, scale, m);
  const int64_t M = x.size(0), K = A.size(0), r = A.size(1), N = B.size(1);
  checks::same_dtype(grad_y, x, kOp, "grad_y", "x");
  checks::same_device(grad_y, x, kOp, "grad_y", "x");
  checks::contiguous(grad_y, kOp, "grad_y");
  TORCH_CHECK(grad_y.dim() == 2 && grad_y.size(0) == M && grad_y.size(1) == N, kOp,
              ": grad_y has shape ", grad_y.sizes(), "; expected [", M, ", ", N, "]");
  const int64_t width = cpu::pool_merged(pm, task_ids.has_value()) ? r : K * r;
  checks::same_dtype(hidden, x, kOp, "hidden", "x");
  checks::contiguous(hidden, kOp, "hidden");
  TORCH_CHECK(hidden.dim() == 2 && hidden.size(0) == M && hidden.size(1) == width, kOp,
              ": hidden has shape ", hidden.sizes(), "; expected [", M, ", ", width,
              "] (the second output of the forward)");
  auto [gx, gc, gA, gB] = cpu::pool_fusion_backward(grad_y, x, A, B, coeffs, task_ids, hidden,
                                                    scale, pm, need_x, need_coeffs, need_A,
                                                    need_B);
  // Gradients not asked for are empty tensors (not undefined ones) so that real and fake
  // kernels agree on the outputs.
  auto or_empty = [&](at::Tensor t) { return t.defined() ? t : at::empty({0}, x.options()); };
  return {or_empty(gx), or_empty(gc), or_empty(gA), or_empty(gB)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lorafusion, m) {
  m.def(
      "pool_fusion(Tensor x, Tensor A, Tensor B, Tensor coeffs, Tensor? task_ids=None, *, "
      "float scale, str mode) -> (Tensor, Tensor)");
  m.def(
      "pool_fusion_backward(Tensor grad_y, Tensor x, Tensor A, Tensor B, Tensor coeffs, "
      "Tensor? task_ids, Tensor hidden, *, float scale, str mode, bool need_x, "
      "bool need_coeffs, bool need_A, bool need_B) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lorafusion, CPU, m) {
  m.impl("pool_fusion", &pool_fusion_cpu);
  m.impl("pool_fusion_backward", &pool_fusion_backward_cpu);
}

}  // namespace lorafusion
