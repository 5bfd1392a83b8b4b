// CUDA registration of crossbar_mvm and its backward: the shared argument prologue of
// crossbar_params.h (the CPU's checks and messages) with CUDA's device rules, then the
// torch-free launch API of csrc/cuda/launch.h on the current stream.
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "../../cuda/launch.h"
#include "../checks.h"
#include "../crossbar_params.h"
#include "cuda_glue.h"

namespace lorafusion {
namespace {

// Crossbar features the CUDA kernel does not implement yet: a clear error, never a silent skip.
void check_cuda_features(const CrossbarParams& p, bool training) {
  TORCH_CHECK(!(training && p.modifier_res > 0.0), kCrossbarOp,
              ": the DISCRETIZE training modifier (AIHWKIT modifier.type = DISCRETIZE) is implemented in the "
              "CPU kernel only");
  TORCH_CHECK(p.inp_asymmetry == 0.0 && p.out_asymmetry == 0.0, kCrossbarOp,
              ": inp_asymmetry / out_asymmetry (AIHWKIT forward.inp_asymmetry, forward.out_asymmetry) are "
              "implemented in the CPU kernel only; got ", p.inp_asymmetry, ", ", p.out_asymmetry,
              " on a CUDA tensor");
  TORCH_CHECK(!(training && p.modifier_mult_std > 0.0), kCrossbarOp,
              ": the MULT_NORMAL training modifier (AIHWKIT modifier.type = MULT_NORMAL) is implemented in the "
              "CPU kernel only");
  TORCH_CHECK(!p.inp_sto_round && !p.out_sto_round, kCrossbarOp,
              ": stochastic rounding (AIHWKIT forward.inp_sto_round / out_sto_round) is implemented in the CPU "
              "kernel only");
  TORCH_CHECK(!(training && p.modifier_sample_rows > 0), kCrossbarOp,
              ": per-sample weight noise (AIHWKIT modifier.per_batch_sample) is implemented in the CPU kernel only");
  TORCH_CHECK(!(training && p.modifier_sto_round), kCrossbarOp,
              ": stochastic rounding of the DISCRETIZE modifier (AIHWKIT modifier.sto_round) is implemented in the "
              "CPU kernel only");
  TORCH_CHECK(training || p.ir_drop == 0.0, kCrossbarOp,
              ": time-dependent IR drop (AIHWKIT TorchInferenceRPUConfigIRDropT forward.ir_drop) is implemented in "
              "the CPU kernel only; got ir_drop = ", p.ir_drop);
  TORCH_CHECK(p.inp_noise == 0.0, kCrossbarOp,
              ": input noise (AIHWKIT forward.inp_noise) is implemented in the CPU kernel only; got ", p.inp_noise);
  TORCH_CHECK(p.out_scale == 1.0, kCrossbarOp,
              ": out_scale (AIHWKIT forward.out_scale) is implemented in the CPU kernel only; got ", p.out_scale);
  TORCH_CHECK(p.noise_management != NoiseManagement::kConstant, kCrossbarOp,
              ": CONSTANT noise management (AIHWKIT forward.noise_management = CONSTANT) is implemented in the "
              "CPU kernel only");
}

// The CUDA device rules for the shared prologue (crossbar_params.h).
struct CudaRules {
  static void check_x(const at::Tensor& x) { cuda_glue::cuda_tensor(x, kCrossbarOp, "x"); }
  static void check_call(const at::Tensor& x, const at::Tensor& rng, const CrossbarParams& p, bool training) {
    TORCH_CHECK(x.size(0) <= INT32_MAX, kCrossbarOp, ": x has ", x.size(0),
                " rows; the CUDA kernel supports at most 2^31 - 1");
    TORCH_CHECK(rng.device().is_cpu() || rng.device() == x.device(), kCrossbarOp, ": rng is on ",
                rng.device(), "; expected x's device ", x.device(),
                " (or the CPU; a device rng lets a captured CUDA graph draw fresh noise)");
    check_cuda_features(p, training);
  }
};

// The kernels read (seed, offset) from device memory; a CPU rng is copied over (not during
// graph capture, where that copy would be illegal: pass a device rng there).
at::Tensor device_rng(const at::Tensor& rng, const at::Tensor& x, cudaStream_t stream) {
  if (rng.device() == x.device()) return rng;
  TORCH_CHECK(!cuda_glue::capturing(stream), kCrossbarOp,
              ": rng is a CPU tensor while a CUDA graph is being captured; keep rng on ",
              x.device(), " so that each replay reads the current (seed, offset)");
  return rng.to(x.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossbar_mvm_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
    const std::optional<at::Tensor>& bias, const at::Tensor& rng,
    const std::optional<at::Tensor>& noise_out, const std::optional<at::Tensor>& noise_weight,
    const std::optional<at::Tensor>& input_range, c10::ArrayRef<double> params, bool training, bool need_aux) {
  const CrossbarCall c = crossbar_forward_prologue<CudaRules>(x, weight, out_scales, bias, rng, noise_out,
                                                              noise_weight, params, training);
  check_crossbar_input_range(input_range, x, weight, c.p, need_aux);
  const CrossbarParams& p = c.p;
  const int64_t M = c.M, K = c.K, N = c.N, tin = c.tin, tout = c.tout;

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = cuda_glue::current_stream(x);
  const at::Tensor rng_dev = device_rng(rng, x, stream);
  at::Tensor y = at::empty(crossbar_output_shape(M, K, N, p), x.options());
  at::Tensor s = at::empty({tin * tout, M}, x.options());
  at::Tensor mask = need_aux ? at::empty({tin, M, N}, x.options().dtype(at::kBool))
                             : at::empty({0}, x.options().dtype(at::kBool));
  at::Tensor passes = at::empty({tin * tout, M}, x.options().dtype(at::kInt));
  const size_t bytes = cuda::crossbar_forward_workspace_bytes(M, K, N, p, x.element_size());
  at::Tensor ws = cuda_glue::workspace(bytes, x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "crossbar_mvm_cuda", [&] {
    cuda::CrossbarForwardArgs<scalar_t> a;
    a.x = x.data_ptr<scalar_t>();
    a.weight = weight.data_ptr<scalar_t>();
    a.out_scales = out_scales.data_ptr<scalar_t>();
    a.n_scales = out_scales.size(0);
    a.bias = bias ? bias->data_ptr<scalar_t>() : nullptr;
    a.rng = rng_dev.data_ptr<int64_t>();
    a.noise_out = noise_out ? noise_out->data_ptr<scalar_t>() : nullptr;
    a.noise_weight = noise_weight ? noise_weight->data_ptr<scalar_t>() : nullptr;
    a.input_range = input_range ? input_range->data_ptr<scalar_t>() : nullptr;
    a.M = M;
    a.K = K;
    a.N = N;
    a.y = y.data_ptr<scalar_t>();
    a.s = s.data_ptr<scalar_t>();
    a.mask = need_aux ? mask.data_ptr<bool>() : nullptr;
    a.passes = passes.data_ptr<int32_t>();
    cuda_glue::check_launch(
        cuda::crossbar_forward<scalar_t>(a, p, training, cuda_glue::allow_tf32(),
                                         ws.data_ptr(), bytes, stream),
        kCrossbarOp);
  });
  // As on the CPU: the (seed, offset) this call used, for the backward's regeneration.
  return {y, s, mask, passes, rng.clone()};
}

std::tuple<at::Tensor, at::Tensor> crossbar_mvm_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out_scales, const at::Tensor& rng, const at::Tensor& scales,
    const at::Tensor& mask, const std::optional<at::Tensor>& noise_weight,
    c10::ArrayRef<double> params, bool training, bool need_grad_x, bool need_grad_weight) {
  const CrossbarCall c = crossbar_backward_prologue<CudaRules>(grad_y, x, weight, out_scales, rng, scales, mask,
                                                               noise_weight, params, training);
  const CrossbarParams& p = c.p;
  const int64_t M = c.M, K = c.K, N = c.N;
  // Checked here, not in check_cuda_features: the forward of such a layer runs on CUDA as ever.
  TORCH_CHECK(!(p.bwd_read && need_grad_x && p.bwd_noise_management == NoiseManagement::kConstant), kCrossbarOp,
              ": CONSTANT noise management of the backward read (bwd_noise_management) is implemented in the CPU "
              "kernel only");

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = cuda_glue::current_stream(x);
  const at::Tensor rng_dev = device_rng(rng, x, stream);
  const at::Tensor gy = grad_y.contiguous(), sc = scales.contiguous(), mk = mask.contiguous();
  at::Tensor grad_x = need_grad_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_w = need_grad_weight ? at::empty_like(weight) : at::empty({0}, x.options());
  if (!need_grad_x && !need_grad_weight) return {grad_x, grad_w};
  const size_t bytes = cuda::crossbar_backward_workspace_bytes(
      M, K, N, p, x.element_size(), need_grad_x, need_grad_weight);
  at::Tensor ws = cuda_glue::workspace(bytes, x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "crossbar_mvm_backward_cuda", [&] {
    cuda::CrossbarBackwardArgs<scalar_t> a;
    a.grad_y = gy.data_ptr<scalar_t>();
    a.x = x.data_ptr<scalar_t>();
    a.weight = weight.data_ptr<scalar_t>();
    a.out_scales = out_scales.data_ptr<scalar_t>();
    a.n_scales = out_scales.size(0);
    a.rng = rng_dev.data_ptr<int64_t>();
    a.s = sc.data_ptr<scalar_t>();
    a.mask = mk.data_ptr<bool>();
    a.noise_weight = noise_weight ? noise_weight->data_ptr<scalar_t>() : nullptr;
    a.M = M;
    a.K = K;
    a.N = N;
    a.grad_x = need_grad_x ? grad_x.data_ptr<scalar_t>() : nullptr;
    a.grad_w = need_grad_weight ? grad_w.data_ptr<scalar_t>() : nullptr;
    cuda_glue::check_launch(
        cuda::crossbar_backward<scalar_t>(a, p, training, cuda_glue::allow_tf32(), ws.data_ptr(),
                                          bytes, stream),
        "lorafusion::crossbar_mvm_backward");
  });
  return {grad_x, grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(lorafusion, CUDA, m) {
  m.impl("crossbar_mvm", &crossbar_mvm_cuda);
  m.impl("crossbar_mvm_backward", &crossbar_mvm_backward_cuda);
}

}  // namespace lorafusion
