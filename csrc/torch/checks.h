// Argument checks shared by the op registrations: every message names the argument
// and what was expected.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace lorafusion::checks {

inline void floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " has dtype ", t.scalar_type(),
              "; expected float32 or float64 (for bfloat16 / float16 call lorafusion_ext.ops, "
              "which computes them in float32)");
}

inline void same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* op,
                       const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
              t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type(),
              "; expected the same dtype");
}

inline void same_device(const at::Tensor& t, const at::Tensor& ref, const char* op,
                        const char* name, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
              ref_name, " is on ", ref.device(), "; expected the same device");
}

inline void contiguous(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_contiguous(), op, ": ", name,
              " is not contiguous; expected a contiguous tensor (call .contiguous())");
}

inline void dims(const at::Tensor& t, int64_t d, const char* op, const char* name,
                 const char* shape) {
  TORCH_CHECK(t.dim() == d, op, ": ", name, " has shape ", t.sizes(), "; expected ", shape);
}

inline void size(const at::Tensor& t, int64_t d, int64_t expected, const char* op,
                 const char* name, const char* what) {
  TORCH_CHECK(t.size(d) == expected, op, ": ", name, " has shape ", t.sizes(), "; expected dim ",
              d, " (", what, ") to be ", expected);
}

}  // namespace lorafusion::checks
