// The op library: schemas of every lorafusion op. crossbar_mvm's `params` is packed in the
// order of LORAFUSION_CROSSBAR_PARAMS (lorafusion/params.h). Other files add their schemas with
// TORCH_LIBRARY_FRAGMENT and their kernels with TORCH_LIBRARY_IMPL.
#include <torch/library.h>

TORCH_LIBRARY(lorafusion, m) {
  m.def(
      "crossbar_mvm(Tensor x, Tensor weight, Tensor out_scales, Tensor? bias, Tensor rng, "
      "Tensor? noise_out=None, Tensor? noise_weight=None, Tensor? input_range=None, *, "
      "float[] params, bool training, bool need_aux) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "crossbar_mvm_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor out_scales, "
      "Tensor rng, Tensor scales, Tensor mask, Tensor? noise_weight=None, *, float[] params, "
      "bool training, bool need_grad_x, bool need_grad_weight) "
      "-> (Tensor, Tensor)");
}
