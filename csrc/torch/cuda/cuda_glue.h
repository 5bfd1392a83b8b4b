// Helpers shared by the CUDA registrations: the current stream, error reporting, workspace
// allocation, the TF32 switch. Only c10/cuda headers that need the CUDA runtime alone
// (no cuBLAS), so these files build wherever torch has CUDA.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

namespace lorafusion::cuda_glue {

inline cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// True while the current stream is being captured into a CUDA graph: host syncs (.item(),
// a pageable host-to-device copy) are then illegal, so the checks that need one are skipped.
inline bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t err = cudaStreamIsCapturing(stream, &status);
  return err == cudaSuccess && status != cudaStreamCaptureStatusNone;
}

// Scratch memory through the caching allocator (the kernels never allocate).
inline at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, like.options().dtype(at::kByte));
}

// torch.backends.cuda.matmul.allow_tf32 (fp32_precision "tf32"): the same switch that lets
// torch.matmul use TF32 tensor cores lets our tile GEMMs use them.
inline bool allow_tf32() { return at::globalContext().allowTF32CuBLAS(); }

inline void cuda_tensor(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " is on ", t.device(),
              "; expected a CUDA tensor (the CUDA kernel was selected by x's device)");
}

}  // namespace lorafusion::cuda_glue
