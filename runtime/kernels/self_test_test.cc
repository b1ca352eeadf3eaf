// CPU tests of the kernel registry, the Backend policy (FusedAllowed) and the
// self-test's behaviour without a GPU. The self-test on a GPU is covered by
// kernels_gpu_test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <string>

#include "runtime/kernels/compare.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/fused_policy.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"

namespace fjord::kernels {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ResetKernelHealth();
    SetBackend(Backend::kAuto);
  }
  void TearDown() override {
    ResetKernelHealth();
    SetBackend(Backend::kAuto);
  }
};

TEST_F(RegistryTest, RuntimeKernelsAreRegisteredInOrder) {
  const std::vector<std::string> names = RegisteredKernels();
  ASSERT_GE(names.size(), 4u);
  EXPECT_EQ(names[0], kRmsNormKernel);
  EXPECT_EQ(names[1], kRopeKernel);
  EXPECT_EQ(names[2], kSwiGluKernel);
  EXPECT_EQ(names[3], kLinearCrossEntropyKernel);
  EXPECT_TRUE(GetKernelSelfTest(kRopeKernel));
  EXPECT_FALSE(GetKernelSelfTest("no_such_kernel"));
}

TEST_F(RegistryTest, RegisterReplacesTheTestOfAKnownName) {
  RegisterKernel("registry_test_kernel", [] { return absl::InternalError("first"); });
  RegisterKernel("registry_test_kernel", [] { return absl::OkStatus(); });
  const std::vector<std::string> names = RegisteredKernels();
  EXPECT_EQ(std::count(names.begin(), names.end(), "registry_test_kernel"), 1);
  EXPECT_TRUE(GetKernelSelfTest("registry_test_kernel")().ok());
}

TEST_F(RegistryTest, HealthDefaultsToUntestedAndIsSettable) {
  EXPECT_EQ(GetKernelHealth(kSwiGluKernel), KernelHealth::kUntested);
  SetKernelHealth(kSwiGluKernel, KernelHealth::kDisabled);
  EXPECT_EQ(GetKernelHealth(kSwiGluKernel), KernelHealth::kDisabled);
  EXPECT_STREQ(KernelHealthName(GetKernelHealth(kSwiGluKernel)), "disabled");
  ResetKernelHealth();
  EXPECT_EQ(GetKernelHealth(kSwiGluKernel), KernelHealth::kUntested);
}

TEST_F(RegistryTest, FusedAllowedFollowsBackendAndHealth) {
  const bool built = fused::kBuilt;
  // kAuto needs a passed self-test.
  EXPECT_FALSE(FusedAllowed(kRmsNormKernel));
  SetKernelHealth(kRmsNormKernel, KernelHealth::kPassed);
  EXPECT_EQ(FusedAllowed(kRmsNormKernel), built);
  // kFused allows untested and passed kernels, never disabled ones.
  SetBackend(Backend::kFused);
  EXPECT_EQ(FusedAllowed(kRmsNormKernel), built);
  EXPECT_EQ(FusedAllowed(kRopeKernel), built);
  SetKernelHealth(kRopeKernel, KernelHealth::kDisabled);
  EXPECT_FALSE(FusedAllowed(kRopeKernel));
  // kReference: never.
  SetBackend(Backend::kReference);
  EXPECT_FALSE(FusedAllowed(kRmsNormKernel));
}

TEST_F(RegistryTest, FusedSupportIsFalseForCpuTensors) {
  torch::Tensor x = torch::randn({2, 8});
  torch::Tensor w = torch::randn({8});
  EXPECT_FALSE(fused::RmsNormSupported(x, w));
  EXPECT_FALSE(fused::SwiGluSupported(x, x));
  EXPECT_FALSE(fused::LinearCrossEntropySupported(x, torch::randn({5, 8}),
                                                  torch::zeros({2}, torch::kInt64)));
  EXPECT_FALSE(fused::RopeSupported(torch::randn({1, 1, 2, 4}), torch::randn({1, 1, 2, 4}),
                                    torch::randn({1, 2, 4}), torch::randn({1, 2, 4})));
}

TEST_F(RegistryTest, SelfTestWithoutGpuReportsReferencesInUse) {
  if (fused::kBuilt && torch::cuda::is_available()) {
    GTEST_SKIP() << "a CUDA device is present; kernels_gpu_test covers the self-test on it";
  }
  std::string report;
  ASSERT_TRUE(RunKernelSelfTest(&report).ok());
  if (fused::kBuilt) {
    EXPECT_EQ(report, "no CUDA device; references in use\n");
  } else {
    EXPECT_EQ(report, "built without CUDA kernels; references in use\n");
  }
  // Nothing was marked passed, so kAuto keeps the references.
  EXPECT_EQ(GetKernelHealth(kRmsNormKernel), KernelHealth::kUntested);
  EXPECT_TRUE(RunKernelSelfTest(nullptr).ok());
}

TEST(CompareTest, CheckCloseReportsTheWorstElement) {
  torch::Tensor e = torch::tensor({1.0, 2.0, 3.0, 4.0});
  torch::Tensor a = torch::tensor({1.0, 2.05, 3.5, 4.0});
  EXPECT_TRUE(CheckClose(a, e, {0.6, 0}, "x").ok());
  absl::Status s = CheckClose(a, e, {0.01, 0.01}, "dx");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("dx: 2 of 4 elements out of tolerance"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("worst at flat index 2: got 3.5, expected 3"));
}

TEST(CompareTest, CheckCloseRejectsNanAndShapeMismatch) {
  torch::Tensor e = torch::zeros({3});
  torch::Tensor a = torch::tensor({0.0, static_cast<double>(NAN), 0.0});
  absl::Status s = CheckClose(a, e, {1, 1}, "y");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("flat index 1"));
  absl::Status shape = CheckClose(torch::zeros({2}), e, {1, 1}, "y");
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(shape.message()), HasSubstr("y: shape [2] != expected [3]"));
  EXPECT_TRUE(CheckClose(torch::tensor({INFINITY}), torch::tensor({INFINITY}), {0, 0}, "inf").ok());
}

TEST(CompareTest, CompareWithReferenceChecksOutputsAndGradients) {
  torch::manual_seed(7);
  torch::Tensor x = torch::randn({4, 5}).requires_grad_(true);
  auto square = [](const std::vector<torch::Tensor>& in) {
    return std::vector<torch::Tensor>{in[0] * in[0]};
  };
  EXPECT_TRUE(CompareWithReference("square", {x}, square, square, {0, 0}, {0, 0}).ok());
  // Same forward, wrong gradient (detached half): caught on the gradient.
  auto wrong_grad = [](const std::vector<torch::Tensor>& in) {
    return std::vector<torch::Tensor>{in[0] * in[0].detach()};
  };
  absl::Status s = CompareWithReference("square", {x}, wrong_grad, square, {0, 0}, {1e-6, 1e-6});
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("square grad of input 0"));
  // An exception becomes a status.
  auto throws = [](const std::vector<torch::Tensor>&) -> std::vector<torch::Tensor> {
    TORCH_CHECK(false, "boom");
  };
  absl::Status t = CompareWithReference("t", {x}, throws, square, {0, 0}, {0, 0});
  EXPECT_EQ(t.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(t.message()), HasSubstr("boom"));
}

}  // namespace
}  // namespace fjord::kernels
