// CPU registration of crossbar_mvm and its backward: the shared argument prologue of
// crossbar_params.h with the CPU's device rule, then the kernels of csrc/cpu/crossbar_mvm.h.
#include <torch/library.h>

#include "../cpu/crossbar_mvm.h"
#include "crossbar_params.h"

namespace lorafusion {
namespace {

// The CPU's device rules for the shared prologue: the CPU kernel was selected by x's device,
// and it reads (seed, offset) on the host.
struct CpuRules {
  static void check_x(const at::Tensor&) {}
  static void check_call(const at::Tensor&, const at::Tensor& rng, const CrossbarParams&, bool) {
    TORCH_CHECK(rng.device().is_cpu(), kCrossbarOp, ": rng is on ", rng.device(),
                "; expected a CPU tensor for a CPU x");
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossbar_mvm_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
    const std::optional<at::Tensor>& bias, const at::Tensor& rng,
    const std::optional<at::Tensor>& noise_out, const std::optional<at::Tensor>& noise_weight,
    const std::optional<at::Tensor>& input_range, c10::ArrayRef<double> params, bool training, bool need_aux) {
  const CrossbarCall c = crossbar_forward_prologue<CpuRules>(x, weight, out_scales, bias, rng, noise_out,
                                                             noise_weight, params, training);
  check_crossbar_input_range(input_range, x, weight, c.p, need_aux);
  auto [y, s, mask, passes] = cpu::crossbar_mvm_forward(x, weight, out_scales, bias, rng, c.p,
                                                        training, need_aux, noise_out, noise_weight, input_range);
  // The (seed, offset) this call used, as an output of its own: backward regenerates the
  // modifier noise from it even when the caller's RNG buffer has moved on (or a compiled
  // graph would otherwise read the mutated buffer).
  return {y, s, mask, passes, rng.clone()};
}

std::tuple<at::Tensor, at::Tensor> crossbar_mvm_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out_scales, const at::Tensor& rng, const at::Tensor& scales,
    const at::Tensor& mask, const std::optional<at::Tensor>& noise_weight,
    c10::ArrayRef<double> params, bool training, bool need_grad_x, bool need_grad_weight) {
  const CrossbarCall c = crossbar_backward_prologue<CpuRules>(grad_y, x, weight, out_scales, rng, scales, mask,
                                                              noise_weight, params, training);
  return cpu::crossbar_mvm_backward(grad_y.contiguous(), x, weight, out_scales, rng,
                                    scales.contiguous(), mask.contiguous(), c.p, training,
                                    need_grad_x, need_grad_weight, noise_weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(lorafusion, CPU, m) {
  m.impl("crossbar_mvm", &crossbar_mvm_cpu);
  m.impl("crossbar_mvm_backward", &crossbar_mvm_backward_cpu);
}

}  // namespace lorafusion
