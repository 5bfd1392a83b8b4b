// The pybind11 module `_C`: importing it runs the op registrations linked into it, and it
// reports what was built.
#include <lorafusion/params.h>
#include <pybind11/pybind11.h>

#ifndef LORAFUSION_TORCH_VERSION
#error "LORAFUSION_TORCH_VERSION must be defined by the build"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "lorafusion_ext compiled ops (registered under torch.ops.lorafusion)";
  m.attr("torch_version") = LORAFUSION_TORCH_VERSION;
#ifdef LORAFUSION_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_archs") = LORAFUSION_CUDA_ARCHS;
#else
  m.attr("with_cuda") = false;
  m.attr("cuda_archs") = "";
#endif
  m.attr("cpu_flags") = LORAFUSION_CPU_FLAGS;
  // The packing order of crossbar_mvm's `params`, from the one definition in lorafusion/params.h.
  pybind11::tuple names(lorafusion::kCrossbarParamCount);
  for (int64_t i = 0; i < lorafusion::kCrossbarParamCount; ++i) names[i] = lorafusion::kCrossbarParamNames[i];
  m.attr("crossbar_param_names") = names;
}
