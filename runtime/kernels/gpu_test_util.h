// Shared by runtime/kernels' GPU tests (kernels_gpu_test.cc, nf4_gpu_test.cc):
// random CUDA tensors, tolerances, the dtype tags of the launchers, and the
// fixture that skips without a CUDA device or CUDA kernels.
#ifndef FJORD_RUNTIME_KERNELS_GPU_TEST_UTIL_H_
#define FJORD_RUNTIME_KERNELS_GPU_TEST_UTIL_H_

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>
#include "absl/strings/str_cat.h"
#include "runtime/kernels/compare.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/launchers.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"

namespace fjord::kernels::gpu_test {

using ::testing::HasSubstr;
using torch::Tensor;
using Tensors = std::vector<Tensor>;

inline constexpr torch::ScalarType kAllDTypes[] = {torch::kFloat32, torch::kBFloat16,
                                                   torch::kFloat16};

inline std::string Name(torch::ScalarType t) {
  return t == torch::kFloat32 ? "fp32" : t == torch::kBFloat16 ? "bf16" : "fp16";
}

inline Tensor Randn(std::vector<int64_t> sizes, torch::ScalarType dt, double scale = 1.0) {
  return (torch::randn(sizes, torch::dtype(torch::kFloat32).device(torch::kCUDA)) * scale).to(dt);
}

inline Tolerance Tol(torch::ScalarType dt, double atol_factor = 1.0, double rtol_factor = 1.0) {
  Tolerance t = DefaultTolerance(dt);
  return {t.atol * atol_factor, t.rtol * rtol_factor};
}

inline cuda::DType TagOf(torch::ScalarType t) {
  return t == torch::kFloat32    ? cuda::DType::kF32
         : t == torch::kBFloat16 ? cuda::DType::kBF16
                                 : cuda::DType::kF16;
}

inline cudaStream_t Stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

class KernelsGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fused::kBuilt) GTEST_SKIP() << "built without CUDA kernels";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
    torch::manual_seed(42);
    SetBackend(Backend::kAuto);
    ResetKernelHealth();
  }
  void TearDown() override {
    SetBackend(Backend::kAuto);
    ResetKernelHealth();
  }
};

#define EXPECT_OK(expr)                   \
  do {                                    \
    const absl::Status s_ = (expr);       \
    EXPECT_TRUE(s_.ok()) << s_.message(); \
  } while (0)

}  // namespace fjord::kernels::gpu_test

#endif  // FJORD_RUNTIME_KERNELS_GPU_TEST_UTIL_H_
