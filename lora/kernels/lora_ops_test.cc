// CPU tests of the LoRA linear reference (lora_ops.h): the formula in
// float64, gradients against finite differences, dropout semantics, the
// grouped and masked forms, dispatch on CPU tensors, and registration of the
// LoRA kernels' self-tests.
#include "lora/kernels/lora_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/linear.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <functional>
#include <string>
#include <vector>

#include "lora/kernels/lora_fused.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/ops.h"

namespace fjord::lora::kernels {
namespace {

using torch::Tensor;

::testing::AssertionResult Close(const Tensor& actual, const Tensor& expected, double atol,
                                 double rtol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " != " << expected.sizes();
  }
  if (actual.numel() == 0) return ::testing::AssertionSuccess();
  Tensor a = actual.detach().to(torch::kFloat64);
  Tensor e = expected.detach().to(torch::kFloat64);
  Tensor excess = (a - e).abs() - (atol + rtol * e.abs());
  const double worst = excess.max().item<double>();
  if (!(worst <= 0)) {
    const int64_t i = excess.flatten().argmax().item<int64_t>();
    return ::testing::AssertionFailure()
           << "element " << i << ": got " << a.flatten()[i].item<double>() << ", expected "
           << e.flatten()[i].item<double>();
  }
  return ::testing::AssertionSuccess();
}

class LoraReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(99); }
};

TEST_F(LoraReferenceTest, MatchesTheFormulaInDouble) {
  Tensor x = torch::randn({2, 3, 6}, torch::kFloat64);
  Tensor w = torch::randn({5, 6}, torch::kFloat64);
  Tensor bias = torch::randn({5}, torch::kFloat64);
  Tensor a = torch::randn({2, 6}, torch::kFloat64);
  Tensor b = torch::randn({5, 2}, torch::kFloat64);
  Tensor y = reference::LoraLinear(x, w, bias, a, b, 0.75, 0.0, true);
  Tensor expected = torch::matmul(x, (w + 0.75 * torch::matmul(b, a)).t()) + bias;
  EXPECT_TRUE(Close(y, expected, 1e-12, 1e-12));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 5}));
}

// Central finite differences of L = Σ y·R for each element of `param`.
Tensor FiniteDifferenceGrad(const std::function<Tensor()>& loss, Tensor param) {
  torch::NoGradGuard no_grad;
  Tensor grad = torch::zeros_like(param);
  Tensor flat = param.view({-1});
  Tensor gflat = grad.view({-1});
  const double eps = 1e-6;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double orig = flat[i].item<double>();
    flat[i] = orig + eps;
    const double up = loss().item<double>();
    flat[i] = orig - eps;
    const double down = loss().item<double>();
    flat[i] = orig;
    gflat[i] = (up - down) / (2 * eps);
  }
  return grad;
}

TEST_F(LoraReferenceTest, GradientsMatchFiniteDifferencesInDouble) {
  auto opts = torch::dtype(torch::kFloat64);
  Tensor x = torch::randn({2, 3, 4}, opts).requires_grad_(true);
  Tensor w = torch::randn({5, 4}, opts).requires_grad_(true);
  Tensor bias = torch::randn({5}, opts).requires_grad_(true);
  Tensor a = torch::randn({2, 4}, opts).requires_grad_(true);
  Tensor b = torch::randn({5, 2}, opts).requires_grad_(true);
  Tensor r = torch::randn({2, 3, 5}, opts);
  auto loss = [&] { return (reference::LoraLinear(x, w, bias, a, b, 1.7, 0.0, true) * r).sum(); };
  loss().backward();
  const std::vector<std::pair<std::string, Tensor>> params = {
      {"x", x}, {"weight", w}, {"bias", bias}, {"a", a}, {"b", b}};
  for (const auto& [name, p] : params) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(Close(p.grad(), FiniteDifferenceGrad(loss, p), 1e-7, 1e-7));
  }
}

TEST_F(LoraReferenceTest, FrozenBaseGetsNoGradient) {
  Tensor x = torch::randn({3, 4}).requires_grad_(true);
  Tensor w = torch::randn({5, 4});
  Tensor a = torch::randn({2, 4}).requires_grad_(true);
  Tensor b = torch::randn({5, 2}).requires_grad_(true);
  reference::LoraLinear(x, w, Tensor(), a, b, 1.0, 0.0, true).sum().backward();
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(a.grad().defined());
  EXPECT_TRUE(b.grad().defined());
  EXPECT_TRUE(x.grad().defined());
}

TEST_F(LoraReferenceTest, DropoutOnlyInTrainingAndOnlyOnTheAdapterInput) {
  // W = 0, A = B = I, scale 1: y is exactly the dropped adapter input.
  const int64_t d = 50;
  Tensor x = torch::rand({80, d}) + 0.5;  // nonzero
  Tensor w = torch::zeros({d, d});
  Tensor eye = torch::eye(d);
  Tensor eval = reference::LoraLinear(x, w, Tensor(), eye, eye, 1.0, 0.3, /*training=*/false);
  EXPECT_TRUE(Close(eval, x, 1e-6, 1e-6));
  Tensor no_p = reference::LoraLinear(x, w, Tensor(), eye, eye, 1.0, 0.0, /*training=*/true);
  EXPECT_TRUE(Close(no_p, x, 1e-6, 1e-6));

  Tensor y = reference::LoraLinear(x, w, Tensor(), eye, eye, 1.0, 0.3, /*training=*/true);
  Tensor dropped = y.abs() < 1e-6;
  Tensor kept_ok = (y - x / 0.7).abs() < 1e-4;
  EXPECT_TRUE((dropped | kept_ok).all().item<bool>()) << "each element is 0 or x/(1-p)";
  const double fraction = dropped.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(fraction, 0.3, 0.03);  // 4000 draws: 3 standard deviations is 0.022

  // The base path never sees the dropout.
  Tensor w2 = torch::randn({d, d});
  Tensor zero_adapter = torch::zeros({d, d});
  EXPECT_TRUE(Close(reference::LoraLinear(x, w2, Tensor(), zero_adapter, eye, 1.0, 0.9, true),
                    torch::matmul(x, w2.t()), 1e-5, 1e-5));
}

TEST_F(LoraReferenceTest, GroupedEqualsOneCallPerProjection) {
  Tensor x = torch::randn({4, 7, 16});
  std::vector<LoraProjection> ps = {
      {torch::randn({16, 16}), torch::randn({16}), torch::randn({4, 16}), torch::randn({16, 4}),
       2.0},
      {torch::randn({8, 16}), Tensor(), torch::randn({4, 16}), torch::randn({8, 4}), 0.5},
      {torch::randn({8, 16}), Tensor(), torch::randn({2, 16}), torch::randn({8, 2}), 1.0}};
  std::vector<Tensor> ys = reference::LoraLinearGrouped(x, ps, 0.0, true);
  ASSERT_EQ(ys.size(), 3u);
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(Close(ys[i],
                      reference::LoraLinear(x, ps[i].weight, ps[i].bias, ps[i].a, ps[i].b,
                                            ps[i].scale, 0.0, true),
                      0, 0))
        << i;
  }
}

TEST_F(LoraReferenceTest, MaskedFormWithOnesOrZerosMask) {
  Tensor x = torch::randn({3, 6});
  Tensor w = torch::randn({4, 6});
  Tensor bias = torch::randn({4});
  Tensor a = torch::randn({2, 6});
  Tensor b = torch::randn({4, 2});
  EXPECT_TRUE(Close(reference::LoraLinearMasked(x, w, bias, a, b, 1.5, torch::ones({3, 6})),
                    reference::LoraLinear(x, w, bias, a, b, 1.5, 0.0, true), 1e-6, 1e-6));
  EXPECT_TRUE(Close(reference::LoraLinearMasked(x, w, bias, a, b, 1.5, torch::zeros({3, 6})),
                    torch::nn::functional::linear(x, w, bias), 1e-6, 1e-6));
}

TEST_F(LoraReferenceTest, DispatchRunsTheReferenceOnCpuTensors) {
  Tensor x = torch::randn({5, 8});
  Tensor w = torch::randn({6, 8});
  Tensor a = torch::randn({2, 8});
  Tensor b = torch::randn({6, 2});
  EXPECT_FALSE(fused::LoraLinearSupported(x, w, Tensor(), a, b, 0.0));
  Tensor expected = reference::LoraLinear(x, w, Tensor(), a, b, 2.0, 0.0, true);
  for (auto backend : {fjord::kernels::Backend::kAuto, fjord::kernels::Backend::kReference,
                       fjord::kernels::Backend::kFused}) {
    fjord::kernels::SetBackend(backend);
    EXPECT_TRUE(Close(LoraLinear(x, w, Tensor(), a, b, 2.0, 0.0, true), expected, 0, 0));
    std::vector<Tensor> ys = LoraLinearGrouped(x, {{w, Tensor(), a, b, 2.0}}, 0.0, true);
    ASSERT_EQ(ys.size(), 1u);
    EXPECT_TRUE(Close(ys[0], expected, 0, 0));
  }
  fjord::kernels::SetBackend(fjord::kernels::Backend::kAuto);
}

TEST_F(LoraReferenceTest, LoraKernelsAreRegisteredForTheSelfTest) {
  const std::vector<std::string> names = fjord::kernels::RegisteredKernels();
  EXPECT_THAT(names, ::testing::Contains(std::string(kLoraLinearKernel)));
  EXPECT_THAT(names, ::testing::Contains(std::string(kLoraLinearGroupedKernel)));
}

TEST_F(LoraReferenceTest, ReferenceRejectsMismatchedShapes) {
  Tensor x = torch::randn({3, 6});
  try {
    reference::LoraLinear(x, torch::randn({4, 6}), Tensor(), torch::randn({2, 5}),
                          torch::randn({4, 2}), 1.0, 0.0, true);
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cannot be multiplied"));
  }
}

}  // namespace
}  // namespace fjord::lora::kernels
