// Row-major GEMM through cublasGemmEx with fp32 accumulation, and device
// queries shared by the launchers.
//
// cuBLAS is column-major: a row-major (r, c) matrix with row stride ld is the
// column-major (c, r) matrix with leading dimension ld. So the row-major
// C = op(A)·op(B) is computed as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS
// gets B first and A second, with m and n swapped, and each keeps its own
// transpose flag (a row-major matrix read column-major is already transposed).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
  }
  throw std::invalid_argument("Gemm: unsupported dtype tag " + std::to_string(static_cast<int>(t)));
}

size_t ElementSize(DType t) { return t == DType::kF32 ? 4 : 2; }

int CheckedInt(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string("Gemm: ") + what + " = " + std::to_string(v) +
                                " is outside cuBLAS's int range");
  }
  return static_cast<int>(v);
}

}  // namespace

int MultiprocessorCount() {
  constexpr int kMaxDevices = 64;
  static int counts[kMaxDevices] = {};
  static std::mutex mu;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (device < 0 || device >= kMaxDevices) device = 0;
  if (counts[device] == 0) {
    CUDA_CHECK(cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device));
  }
  return counts[device];
}

void Gemm(cublasHandle_t handle, cudaStream_t stream, bool trans_a, bool trans_b, int64_t m,
          int64_t n, int64_t k, float alpha, const void* a, int64_t lda, const void* b, int64_t ldb,
          DType ab_type, float beta, void* c, int64_t ldc, DType c_type) {
  if (c_type != ab_type && c_type != DType::kF32) {
    throw std::invalid_argument("Gemm: output type must be the input type or fp32");
  }
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // op(A)·op(B) is an empty sum: C = beta·C.
    if (beta == 1.0f) return;
    if (beta != 0.0f) throw std::invalid_argument("Gemm: k == 0 supports beta 0 or 1 only");
    const size_t es = ElementSize(c_type);
    CUDA_CHECK(cudaMemset2DAsync(c, static_cast<size_t>(ldc) * es, 0, static_cast<size_t>(n) * es,
                                 static_cast<size_t>(m), stream));
    return;
  }
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  // Column-major: Cᵀ (n, m) = op(B)ᵀ (n, k) · op(A)ᵀ (k, m).
  CUBLAS_CHECK(cublasGemmEx(
      handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      CheckedInt(n, "n"), CheckedInt(m, "m"), CheckedInt(k, "k"), &alpha, b, CudaType(ab_type),
      CheckedInt(ldb, "ldb"), a, CudaType(ab_type), CheckedInt(lda, "lda"), &beta, c,
      CudaType(c_type), CheckedInt(ldc, "ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace fjord::kernels::cuda
