// CPU crossbar MVM (ATen + at::parallel_for). See docs/numerics.md, "The crossbar MVM".
#pragma once
#include <ATen/ATen.h>
#include <lorafusion/params.h>

#include <optional>
#include <tuple>

namespace lorafusion::cpu {

// x [M, K], weight [N, K] (normalised per tile row), out_scales [S, Tin, N], bias [N],
// rng int64 [2] = (seed, offset), input_range [Tin, Tout] (learned input ranges: tile (i, o)'s
// input is clamp(x, -|r|, |r|) / r before the noise management and the DAC) or none. Returns (y [M, N], s [T, M] input scales of the last pass,
// mask [Tin, M, N] bool (ADC clamp not active; empty unless need_aux), passes int32 [T, M]).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossbar_mvm_forward(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
    const std::optional<at::Tensor>& bias, const at::Tensor& rng, const CrossbarParams& params,
    bool training, bool need_aux, const std::optional<at::Tensor>& noise_out,
    const std::optional<at::Tensor>& noise_weight, const std::optional<at::Tensor>& input_range = std::nullopt);

// Straight-through backward: (grad_x [M, K] or undefined, grad_weight [N, K] or undefined).
std::tuple<at::Tensor, at::Tensor> crossbar_mvm_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out_scales, const at::Tensor& rng, const at::Tensor& scales,
    const at::Tensor& mask, const CrossbarParams& params, bool training, bool need_grad_x,
    bool need_grad_weight, const std::optional<at::Tensor>& noise_weight);

}  // namespace lorafusion::cpu
