// Schemas, argument checks and CPU registration of pool_fusion and its backward.
#include <torch/library.h>

#include <cmath>
#include <string>

#include "../cpu/pool_fusion.h"
#include "checks.h"
#include "pool_args.h"

namespace lorafusion {
namespace {

// The shared checks of pool_args.h with the CPU's device rule.
PoolShapeArgs check_inputs(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids,
                           double scale, const std::string& mode) {
  TORCH_CHECK(x.device().is_cpu(), kPoolOp, ": x is on ", x.device(), "; expected a CPU tensor");
  return check_pool_inputs(x, A, B, coeffs, task_ids, scale, mode, true);
}

cpu::PoolMode pool_mode(const PoolShapeArgs& a) { return a.lorahub ? cpu::PoolMode::kLoraHub : cpu::PoolMode::kSum; }

std::tuple<at::Tensor, at::Tensor> pool_fusion_cpu(const at::Tensor& x, const at::Tensor& A,
                                                   const at::Tensor& B, const at::Tensor& coeffs,
                                                   const std::optional<at::Tensor>& task_ids,
                                                   double scale, c10::string_view mode) {
  const cpu::PoolMode pm = pool_mode(check_inputs(x, A, B, coeffs, task_ids, scale, std::string(mode)));
  return cpu::pool_fusion_forward(x, A, B, coeffs, task_ids, scale, pm);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pool_fusion_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids, const at::Tensor& hidden,
    double scale, c10::string_view mode, bool need_x, bool need_coeffs, bool need_A,
    bool need_B) {
  const PoolShapeArgs a = check_inputs(x, A, B, coeffs, task_ids, scale, std::string(mode));
  const cpu::PoolMode pm = pool_mode(a);
  check_pool_backward_inputs(grad_y, hidden, x, a, cpu::pool_merged(pm, a.has_task_ids) ? a.r : a.K * a.r);
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
