// CUDA registration of pool_fusion and its backward: the shared checks of pool_args.h (the
// CPU's checks and messages) with CUDA's device rule, then the launch API of csrc/cuda/launch.h.
#include <torch/library.h>

#include <cmath>
#include <string>

#include "../../cuda/launch.h"
#include "../checks.h"
#include "../pool_args.h"
#include "cuda_glue.h"

namespace lorafusion {
namespace {

// The shared checks of pool_args.h with CUDA's device rule.
PoolShapeArgs check_inputs(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids,
                           double scale, const std::string& mode) {
  cuda_glue::cuda_tensor(x, kPoolOp, "x");
  // The range check reads two scalars back (a sync); under graph capture it is skipped and
  // the kernels turn an out-of-range row into NaN instead of reading out of bounds.
  const bool capturing = cuda_glue::capturing(cuda_glue::current_stream(x));
  return check_pool_inputs(x, A, B, coeffs, task_ids, scale, mode, !capturing);
}

// The checked call's shape as the kernels take it.
cuda::PoolShape kernel_shape(const PoolShapeArgs& a) {
  cuda::PoolShape shape;
  shape.M = a.M;
  shape.d_in = a.d_in;
  shape.K = a.K;
  shape.r = a.r;
  shape.d_out = a.d_out;
  shape.mode = a.lorahub ? cuda::PoolModeCode::kLoraHub : cuda::PoolModeCode::kSum;
  shape.has_task_ids = a.has_task_ids;
  shape.n_tasks = a.n_tasks;
  return shape;
}

template <typename scalar_t>
cuda::PoolArgs<scalar_t> make_args(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                                   const at::Tensor& coeffs,
                                   const std::optional<at::Tensor>& task_ids,
                                   const cuda::PoolShape& shape, double scale) {
  cuda::PoolArgs<scalar_t> a;
  a.x = x.data_ptr<scalar_t>();
  a.A = A.data_ptr<scalar_t>();
  a.B = B.data_ptr<scalar_t>();
  a.coeffs = coeffs.data_ptr<scalar_t>();
  a.task_ids = task_ids ? task_ids->data_ptr<int64_t>() : nullptr;
  a.shape = shape;
  a.scale = scale;
  return a;
}

std::tuple<at::Tensor, at::Tensor> pool_fusion_cuda(const at::Tensor& x, const at::Tensor& A,
                                                    const at::Tensor& B, const at::Tensor& coeffs,
                                                    const std::optional<at::Tensor>& task_ids,
                                                    double scale, c10::string_view mode) {
  const c10::cuda::CUDAGuard guard(x.device());
  const cuda::PoolShape shape = kernel_shape(check_inputs(x, A, B, coeffs, task_ids, scale, std::string(mode)));
  const bool merged = cuda::pool_is_merged(shape.mode, shape.has_task_ids);
  at::Tensor y = at::empty({shape.M, shape.d_out}, x.options());
  at::Tensor hidden = at::empty({shape.M, merged ? shape.r : shape.K * shape.r}, x.options());
  if (shape.M == 0) return {y, hidden};
  const size_t bytes = cuda::pool_forward_workspace_bytes(shape, x.element_size());
  at::Tensor ws = cuda_glue::workspace(bytes, x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool_fusion_cuda", [&] {
    const auto a = make_args<scalar_t>(x, A, B, coeffs, task_ids, shape, scale);
    cuda_glue::check_launch(
        cuda::pool_forward<scalar_t>(a, y.data_ptr<scalar_t>(), hidden.data_ptr<scalar_t>(),
                                     cuda_glue::allow_tf32(), ws.data_ptr(), bytes,
                                     cuda_glue::current_stream(x)),
        kPoolOp);
  });
  return {y, hidden};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pool_fusion_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids, const at::Tensor& hidden,
    double scale, c10::string_view mode, bool need_x, bool need_coeffs, bool need_A,
    bool need_B) {
  const c10::cuda::CUDAGuard guard(x.device());
  const PoolShapeArgs checked = check_inputs(x, A, B, coeffs, task_ids, scale, std::string(mode));
  const cuda::PoolShape shape = kernel_shape(checked);
  check_pool_backward_inputs(grad_y, hidden, x, checked,
                             cuda::pool_is_merged(shape.mode, shape.has_task_ids) ? shape.r : shape.K * shape.r);
  // Gradients not asked for are empty tensors, as the CPU op and the fake kernel return.
  auto make = [&](bool need, const at::Tensor& like) {
    return need ? at::empty_like(like) : at::empty({0}, x.options());
  };
  at::Tensor gx = make(need_x, x), gc = make(need_coeffs, coeffs), gA = make(need_A, A),
             gB = make(need_B, B);
  if (!(need_x || need_coeffs || need_A || need_B)) return {gx, gc, gA, gB};
  const size_t bytes = cuda::pool_backward_workspace_bytes(shape, x.element_size(), need_x,
                                                           need_coeffs, need_A, need_B);
  at::Tensor ws = cuda_glue::workspace(bytes, x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool_fusion_backward_cuda", [&] {
    const auto a = make_args<scalar_t>(x, A, B, coeffs, task_ids, shape, scale);
    auto ptr = [](bool need, at::Tensor& t) { return need ? t.data_ptr<scalar_t>() : nullptr; };
    cuda_glue::check_launch(
        cuda::pool_backward<scalar_t>(a, grad_y.data_ptr<scalar_t>(),
                                      hidden.data_ptr<scalar_t>(), ptr(need_x, gx),
                                      ptr(need_coeffs, gc), ptr(need_A, gA), ptr(need_B, gB),
                                      cuda_glue::allow_tf32(), ws.data_ptr(), bytes,
                                      cuda_glue::current_stream(x)),
        "lorafusion::pool_fusion_backward");
  });
  return {gx, gc, gA, gB};
}

}  // namespace

TORCH_LIBRARY_IMPL(lorafusion, CUDA, m) {
  m.impl("pool_fusion", &pool_fusion_cuda);
  m.impl("pool_fusion_backward", &pool_fusion_backward_cuda);
}

}  // namespace lorafusion
