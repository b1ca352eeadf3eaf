// GPU tests of the fused LoRA linear (lora_fused.h) against the reference:
// forward and every gradient (x, A, B, and W/bias when they require grad) on
// random shapes including odd sizes, N = 0 and N = 1, fp32 adapters on a
// bf16 model; the dropout mask regenerated in the backward; the grouped form
// (q/k/v with GQA widths, gate/up); dispatch; and the self-test. Skipped
// (with the reason) without a CUDA device or in a build without CUDA.
//
// Tolerance: |fused − reference| <= atol + rtol·|reference| elementwise, with
// fp32 atol 1e-5, rtol 1e-4 and bf16 atol 2e-2, rtol 2e-2 (compare.h), atol
// multiplied by max(1, max |reference|) of each tensor (CompareWithReference):
// every output here is a GEMM, whose rounding errors scale with its terms
// (the kernels accumulate in fp32 where the reference rounds intermediates
// such as dy·s and dxa to bf16; both sum in different orders).
//
// Shape legend: N tokens, in, out features, r rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lora/kernels/lora_fused.h"
#include "lora/kernels/lora_ops.h"
#include "runtime/kernels/compare.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"

namespace fjord::lora::kernels {
namespace {

using ::fjord::kernels::CheckClose;
using ::fjord::kernels::CompareWithReference;
using ::fjord::kernels::DefaultTolerance;
using ::fjord::kernels::Tolerance;
using ::testing::HasSubstr;
using torch::Tensor;
using Tensors = std::vector<Tensor>;

#define EXPECT_OK(expr)                   \
  do {                                    \
    const absl::Status s_ = (expr);       \
    EXPECT_TRUE(s_.ok()) << s_.message(); \
  } while (0)

std::string Name(torch::ScalarType t) { return t == torch::kFloat32 ? "fp32" : "bf16"; }

Tensor Randn(std::vector<int64_t> sizes, torch::ScalarType dt, double scale = 1.0) {
  return (torch::randn(sizes, torch::dtype(torch::kFloat32).device(torch::kCUDA)) * scale).to(dt);
}

Tolerance Tol(torch::ScalarType dt) { return DefaultTolerance(dt); }

class LoraKernelsGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fjord::kernels::fused::kBuilt) GTEST_SKIP() << "built without CUDA kernels";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
    torch::manual_seed(7);
    fjord::kernels::SetBackend(fjord::kernels::Backend::kAuto);
    fjord::kernels::ResetKernelHealth();
  }
  void TearDown() override {
    fjord::kernels::SetBackend(fjord::kernels::Backend::kAuto);
    fjord::kernels::ResetKernelHealth();
  }
};

struct Case {
  std::vector<int64_t> lead;  // leading dims of x
  int64_t in, out, r;
  bool bias;
  bool fp32_adapters;  // A, B in fp32 while x, W are in the model dtype
  bool weight_grad;    // W and bias require grad too
  bool x_grad;
};

TEST_F(LoraKernelsGpuTest, LoraLinearMatchesReference) {
  const std::vector<Case> cases = {
      {{0}, 64, 48, 8, true, false, false, true},        // N = 0
      {{1}, 64, 48, 8, false, false, false, true},       // N = 1
      {{37}, 129, 67, 1, true, true, false, true},       // odd sizes, rank 1
      {{2, 5}, 256, 512, 16, false, true, false, true},  // 3-D x
      {{257}, 512, 384, 16, true, false, true, true},    // W and bias trained too
      {{33}, 96, 80, 4, false, true, false, false},      // x needs no grad
  };
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const Case& c : cases) {
      std::vector<int64_t> xs = c.lead;
      xs.push_back(c.in);
      int64_t n = 1;
      for (int64_t d : c.lead) n *= d;
      const torch::ScalarType adt = c.fp32_adapters ? torch::kFloat32 : dt;
      Tensor x = Randn(xs, dt).requires_grad_(c.x_grad);
      Tensor w = Randn({c.out, c.in}, dt, 1.0 / std::sqrt(c.in)).requires_grad_(c.weight_grad);
      Tensor bias = c.bias ? Randn({c.out}, dt).requires_grad_(c.weight_grad) : Tensor();
      Tensor a = Randn({c.r, c.in}, adt, 1.0 / std::sqrt(c.in)).requires_grad_(true);
      Tensor b = Randn({c.out, c.r}, adt, 1.0 / std::sqrt(c.r)).requires_grad_(true);
      const std::string what =
          absl::StrCat("lora_linear ", Name(dt), " N", n, " in", c.in, " out", c.out, " r", c.r);
      EXPECT_OK(CompareWithReference(
          what, {x, w, bias, a, b},
          [](const Tensors& in) {
            return Tensors{fused::LoraLinear(in[0], in[1], in[2], in[3], in[4], 2.0, 0.05, false)};
          },
          [](const Tensors& in) {
            return Tensors{
                reference::LoraLinear(in[0], in[1], in[2], in[3], in[4], 2.0, 0.05, false)};
          },
          Tol(dt), Tol(dt)));
    }
  }
}

TEST_F(LoraKernelsGpuTest, DropoutMaskIsRegeneratedInTheBackward) {
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    const int64_t n = 50, in = 96, out = 40, r = 8;
    Tensor x = Randn({n, in}, dt).requires_grad_(true);
    Tensor w = Randn({out, in}, dt, 0.1);
    Tensor bias = Randn({out}, dt);
    Tensor a = Randn({r, in}, torch::kFloat32, 0.1).requires_grad_(true);
    Tensor b = Randn({out, r}, torch::kFloat32, 0.3).requires_grad_(true);
    const uint64_t seed = 123456789;
    Tensor mask = fused::DropoutMask(n, in, 0.3, seed, x.device());
    EXPECT_OK(CompareWithReference(
        "lora_linear dropout " + Name(dt), {x, w, bias, a, b},
        [seed](const Tensors& in) {
          return Tensors{
              fused::LoraLinear(in[0], in[1], in[2], in[3], in[4], 1.5, 0.3, true, seed)};
        },
        [mask](const Tensors& in) {
          return Tensors{reference::LoraLinearMasked(in[0], in[1], in[2], in[3], in[4], 1.5, mask)};
        },
        Tol(dt), Tol(dt)));
  }
}

TEST_F(LoraKernelsGpuTest, DropoutMaskDropsAboutPAndScalesTheRest) {
  Tensor mask = fused::DropoutMask(300, 1000, 0.25, 42, torch::Device(torch::kCUDA));
  Tensor dropped = mask == 0;
  Tensor kept = (mask - 1.0 / 0.75).abs() < 1e-6;
  EXPECT_TRUE((dropped | kept).all().item<bool>());
  EXPECT_NEAR(dropped.to(torch::kFloat64).mean().item<double>(), 0.25, 0.005);
  Tensor other = fused::DropoutMask(300, 1000, 0.25, 43, torch::Device(torch::kCUDA));
  EXPECT_FALSE(torch::equal(mask, other)) << "different seeds, same mask";
  EXPECT_TRUE(
      torch::equal(mask, fused::DropoutMask(300, 1000, 0.25, 42, torch::Device(torch::kCUDA))));
}

TEST_F(LoraKernelsGpuTest, DropoutOnlyWhenTraining) {
  Tensor x = Randn({9, 32}, torch::kBFloat16);
  Tensor w = Randn({16, 32}, torch::kBFloat16, 0.2);
  Tensor a = Randn({4, 32}, torch::kBFloat16, 0.2);
  Tensor b = Randn({16, 4}, torch::kBFloat16);
  Tensor eval = fused::LoraLinear(x, w, Tensor(), a, b, 2.0, 0.5, /*training=*/false);
  Tensor none = fused::LoraLinear(x, w, Tensor(), a, b, 2.0, 0.0, /*training=*/true);
  Tensor train = fused::LoraLinear(x, w, Tensor(), a, b, 2.0, 0.5, /*training=*/true);
  EXPECT_TRUE(torch::equal(eval, none));
  EXPECT_FALSE(torch::equal(train, none));
}

TEST_F(LoraKernelsGpuTest, GroupedMatchesReference) {
  struct GroupCase {
    std::string name;
    int64_t n, in;
    std::vector<std::pair<int64_t, int64_t>> out_rank;
    std::vector<bool> bias;
  };
  const std::vector<GroupCase> cases = {
      {"qkv GQA 4:1", 65, 256, {{256, 16}, {64, 16}, {64, 16}}, {false, false, false}},
      {"qkv with biases (Qwen2)", 17, 128, {{128, 8}, {32, 8}, {32, 8}}, {true, true, true}},
      {"gate/up", 33, 96, {{200, 8}, {200, 8}}, {false, false}},
      {"mixed ranks, one bias", 9, 48, {{32, 4}, {16, 1}, {24, 8}}, {false, true, false}},
      {"N = 1", 1, 64, {{64, 4}, {16, 4}}, {false, false}},
      {"N = 0", 0, 64, {{64, 4}, {16, 4}}, {true, false}},
  };
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const GroupCase& c : cases) {
      Tensors inputs = {Randn({c.n, c.in}, dt).requires_grad_(true)};
      for (size_t i = 0; i < c.out_rank.size(); ++i) {
        const auto [out, r] = c.out_rank[i];
        inputs.push_back(Randn({out, c.in}, dt, 1.0 / std::sqrt(c.in)));
        inputs.push_back(c.bias[i] ? Randn({out}, dt) : Tensor());
        inputs.push_back(
            Randn({r, c.in}, torch::kFloat32, 1.0 / std::sqrt(c.in)).requires_grad_(true));
        inputs.push_back(Randn({out, r}, torch::kFloat32, 1.0 / std::sqrt(r)).requires_grad_(true));
      }
      auto projections = [](const Tensors& in) {
        std::vector<LoraProjection> ps;
        for (size_t i = 1; i + 3 < in.size(); i += 4) {
          ps.push_back({in[i], in[i + 1], in[i + 2], in[i + 3], 0.5 + static_cast<double>(i) / 8});
        }
        return ps;
      };
      EXPECT_OK(CompareWithReference(
          absl::StrCat("lora_linear_grouped ", Name(dt), " ", c.name), inputs,
          [projections](const Tensors& in) {
            return fused::LoraLinearGrouped(in[0], projections(in), 0.1, false);
          },
          [projections](const Tensors& in) {
            return reference::LoraLinearGrouped(in[0], projections(in), 0.1, false);
          },
          Tol(dt), Tol(dt)));
    }
  }
}

TEST_F(LoraKernelsGpuTest, GroupedWithDropoutDrawsOneMaskPerProjection) {
  Tensor x = Randn({40, 64}, torch::kBFloat16);
  Tensor w = Randn({32, 64}, torch::kBFloat16, 0.1);
  Tensor a = Randn({8, 64}, torch::kBFloat16, 0.1);
  Tensor b = Randn({32, 8}, torch::kBFloat16);
  // Two identical projections: with one shared mask their outputs would match.
  std::vector<Tensor> ys =
      fused::LoraLinearGrouped(x, {{w, Tensor(), a, b, 1.0}, {w, Tensor(), a, b, 1.0}}, 0.5, true);
  ASSERT_EQ(ys.size(), 2u);
  EXPECT_FALSE(torch::equal(ys[0], ys[1]));
}

TEST_F(LoraKernelsGpuTest, DispatchUsesFusedOnlyWhenAllowed) {
  Tensor x = Randn({8, 32}, torch::kBFloat16).requires_grad_(true);
  Tensor w = Randn({16, 32}, torch::kBFloat16);
  Tensor a = Randn({4, 32}, torch::kFloat32).requires_grad_(true);
  Tensor b = Randn({16, 4}, torch::kFloat32).requires_grad_(true);
  auto ran_fused = [](const Tensor& y) {
    return y.grad_fn()->name().find("LoraLinearFn") != std::string::npos;
  };
  EXPECT_FALSE(ran_fused(LoraLinear(x, w, Tensor(), a, b, 1.0, 0.0, true)));  // untested
  fjord::kernels::SetKernelHealth(kLoraLinearKernel, fjord::kernels::KernelHealth::kPassed);
  EXPECT_TRUE(ran_fused(LoraLinear(x, w, Tensor(), a, b, 1.0, 0.0, true)));
  fjord::kernels::SetBackend(fjord::kernels::Backend::kReference);
  EXPECT_FALSE(ran_fused(LoraLinear(x, w, Tensor(), a, b, 1.0, 0.0, true)));
  fjord::kernels::SetBackend(fjord::kernels::Backend::kFused);
  EXPECT_TRUE(ran_fused(LoraLinear(x, w, Tensor(), a, b, 1.0, 0.0, true)));
  // Dropout p = 1 (everything dropped): not supported, reference.
  EXPECT_FALSE(ran_fused(LoraLinear(x, w, Tensor(), a, b, 1.0, 1.0, true)));
}

TEST_F(LoraKernelsGpuTest, SelfTestPassesForLoraKernels) {
  std::string report;
  absl::Status s = fjord::kernels::RunKernelSelfTest(&report);
  ASSERT_TRUE(s.ok()) << s.message() << "\n" << report;
  EXPECT_THAT(report, HasSubstr("lora_linear: passed\n"));
  EXPECT_THAT(report, HasSubstr("lora_linear_grouped: passed\n"));
  EXPECT_EQ(fjord::kernels::GetKernelHealth(kLoraLinearKernel),
            fjord::kernels::KernelHealth::kPassed);
}

}  // namespace
}  // namespace fjord::lora::kernels
