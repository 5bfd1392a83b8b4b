// Schemas, argument checks and CPU registration of pool_fusion and its backward.
#include <torch/library.h>

#include <cmath>
#include <string>

#include "../cpu/pool_fusion.h"
#include "checks.h"
#include "pool_args.h"

namespace lorafusion {
namespace {

constexpr const char* kOp = "lorafusion::pool_fusion";

// Checks shared by forward and backward; returns the mode.
cpu::PoolMode check_inputs(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids,
                           double scale, const std::string& mode) {
  TORCH_CHECK(x.device().is_cpu(), kOp, ": x is on ", x.device(), "; expected a CPU tensor");
  const PoolShapeArgs a = check_pool_inputs(x, A, B, coeffs, task_ids, scale, mode, true);
  return a.lorahub ? cpu::PoolMode::kLoraHub : cpu::PoolMode::kSum;
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
