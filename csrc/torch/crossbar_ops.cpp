// CPU registration of crossbar_mvm and its backward, with the argument checks.
#include <torch/library.h>

#include <cmath>

#include "../cpu/crossbar_mvm.h"
#include "checks.h"
#include "crossbar_params.h"

namespace lorafusion {
namespace {

constexpr const char* kOp = "lorafusion::crossbar_mvm";

void check_common(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
                  const at::Tensor& rng, const CrossbarParams& p) {
  check_crossbar_inputs(x, weight, out_scales, rng, p);
  TORCH_CHECK(rng.device().is_cpu(), kOp, ": rng is on ", rng.device(),
              "; expected a CPU tensor for a CPU x");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossbar_mvm_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
    const std::optional<at::Tensor>& bias, const at::Tensor& rng,
    const std::optional<at::Tensor>& noise_out, const std::optional<at::Tensor>& noise_weight,
    c10::ArrayRef<double> params, bool training, bool need_aux) {
  const CrossbarParams p = make_crossbar_params(params);
  check_common(x, weight, out_scales, rng, p);
  check_crossbar_bias(bias, x, weight, p);
  if (noise_out) {
    const int64_t tin = split_count(weight.size(1), p.max_in);
    checks::same_dtype(*noise_out, x, kOp, "noise_out", "x");
    checks::contiguous(*noise_out, kOp, "noise_out");
    const std::vector<int64_t> expected{p.max_passes, tin, x.size(0), weight.size(0)};
    TORCH_CHECK(noise_out->sizes() == at::IntArrayRef(expected), kOp, ": noise_out has shape ",
                noise_out->sizes(), "; expected [max_passes, input_tiles, tokens, out_features] = ",
                at::IntArrayRef(expected));
  }
  check_crossbar_noise_weight(noise_weight, x, weight, p);
  auto [y, s, mask, passes] = cpu::crossbar_mvm_forward(x, weight, out_scales, bias, rng, p,
                                                        training, need_aux, noise_out, noise_weight);
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
  const CrossbarParams p = make_crossbar_params(params);
  check_common(x, weight, out_scales, rng, p);
  const int64_t tin = split_count(weight.size(1), p.max_in);
  const int64_t tiles = tin * split_count(weight.size(0), p.max_out);
  check_crossbar_grad_y(grad_y, x, weight, p);
  TORCH_CHECK(scales.dim() == 2 && scales.size(0) == tiles && scales.size(1) == x.size(0), kOp,
              ": scales has shape ", scales.sizes(), "; expected [tiles, tokens]");
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 3 && mask.size(0) == tin &&
                  mask.size(1) == x.size(0) && mask.size(2) == weight.size(0),
              kOp, ": mask has shape ", mask.sizes(),
              "; expected bool [input_tiles, tokens, out_features] (run forward with need_aux)");
  check_crossbar_noise_weight(noise_weight, x, weight, p);
  return cpu::crossbar_mvm_backward(grad_y.contiguous(), x, weight, out_scales, rng,
                                    scales.contiguous(), mask.contiguous(), p, training,
                                    need_grad_x, need_grad_weight, noise_weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(lorafusion, CPU, m) {
  m.impl("crossbar_mvm", &crossbar_mvm_cpu);
  m.impl("crossbar_mvm_backward", &crossbar_mvm_backward_cpu);
}

}  // namespace lorafusion
