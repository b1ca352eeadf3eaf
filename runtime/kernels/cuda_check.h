// Error checks for CUDA runtime and cuBLAS calls, carrying file and line.
//
// CUDA_CHECK(expr) and CUBLAS_CHECK(expr) throw fjord::kernels::CudaError when
// `expr` does not return success; CUDA_CHECK_LAUNCH() checks the last kernel
// launch. Throwing (rather than aborting as llm.c does) lets the LibTorch
// wrappers and the start-up self-test turn a failure into a c10::Error or an
// absl::Status at the runtime's boundary.
//
// Plain C++ and CUDA headers only: included by .cu files and by the LibTorch
// wrappers alike.
#ifndef FJORD_RUNTIME_KERNELS_CUDA_CHECK_H_
#define FJORD_RUNTIME_KERNELS_CUDA_CHECK_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace fjord::kernels {

// A failed CUDA runtime or cuBLAS call. what() reads
// "<file>:<line>: <expression>: <error name>: <error string>".
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace internal {

inline void ThrowCudaError(const char* what, const char* name, const char* detail, const char* file,
                           int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + what + ": " + name +
                  ": " + detail);
}

inline void CheckCuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) {
    ThrowCudaError(what, cudaGetErrorName(err), cudaGetErrorString(err), file, line);
  }
}

inline void CheckCublas(cublasStatus_t status, const char* what, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    ThrowCudaError(what, cublasGetStatusName(status), cublasGetStatusString(status), file, line);
  }
}

}  // namespace internal
}  // namespace fjord::kernels

#define CUDA_CHECK(expr) ::fjord::kernels::internal::CheckCuda((expr), #expr, __FILE__, __LINE__)
#define CUBLAS_CHECK(expr) \
  ::fjord::kernels::internal::CheckCublas((expr), #expr, __FILE__, __LINE__)
// After a <<<...>>> launch: reports configuration errors (bad grid, too much
// shared memory) at the launch site. Faults inside the kernel surface at the
// next synchronising call.
#define CUDA_CHECK_LAUNCH() \
  ::fjord::kernels::internal::CheckCuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

#endif  // FJORD_RUNTIME_KERNELS_CUDA_CHECK_H_
