// Small helpers for the LibTorch wrappers of fjord's CUDA kernels (here and in
// lora/kernels): the dtype tag of a tensor, the current stream and cuBLAS
// handle. Only meaningful when FJORD_KERNELS_FUSED (fused.h) is 1; include it
// under that guard.
#ifndef FJORD_RUNTIME_KERNELS_TORCH_CUDA_H_
#define FJORD_RUNTIME_KERNELS_TORCH_CUDA_H_

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/types.h>

#include "runtime/kernels/launchers.h"

namespace fjord::kernels::torch_cuda {

// fp32, bf16 and fp16: the dtypes the fused kernels are built for.
inline bool IsKernelDType(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16;
}

// The launchers' tag for `t` (one of IsKernelDType's types; throws otherwise).
inline cuda::DType Tag(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return cuda::DType::kF32;
    case torch::kBFloat16:
      return cuda::DType::kBF16;
    case torch::kFloat16:
      return cuda::DType::kF16;
    default:
      break;
  }
  TORCH_CHECK(false, "fjord kernels: unsupported dtype ", t.scalar_type());
  return cuda::DType::kF32;  // not reached
}

// The current stream and cuBLAS handle of the current device (set it first
// with a c10::cuda::CUDAGuard for the tensors' device).
inline cudaStream_t Stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
inline cublasHandle_t Blas() { return at::cuda::getCurrentCUDABlasHandle(); }

// True when every defined tensor is a CUDA tensor on `device`.
inline bool AllOn(const torch::Device& device, std::initializer_list<torch::Tensor> tensors) {
  for (const torch::Tensor& t : tensors) {
    if (t.defined() && (!t.is_cuda() || t.device() != device)) return false;
  }
  return true;
}

}  // namespace fjord::kernels::torch_cuda

#endif  // FJORD_RUNTIME_KERNELS_TORCH_CUDA_H_
