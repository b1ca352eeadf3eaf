// CPU tests of the references in runtime/kernels/ops.h (reference.cc): each
// against an independent recomputation (float64 formulas, explicit rotation,
// LibTorch's full cross-entropy), plus the dispatch on CPU tensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include <cmath>
#include <vector>

#include "runtime/kernels/ops.h"

namespace fjord::kernels {
namespace {

using ::testing::HasSubstr;
using torch::Tensor;

// |a − e| <= atol + rtol·|e| everywhere, compared in float64.
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
  if (!(worst <= 0) || a.isnan().any().item<bool>()) {
    const int64_t i = excess.flatten().argmax().item<int64_t>();
    return ::testing::AssertionFailure()
           << "worst element " << i << ": got " << a.flatten()[i].item<double>() << ", expected "
           << e.flatten()[i].item<double>() << " (atol " << atol << ", rtol " << rtol << ")";
  }
  return ::testing::AssertionSuccess();
}

class ReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(1234); }
};

// ---------------------------------------------------------------- RMSNorm

Tensor RmsNormDouble(const Tensor& x, const Tensor& w, double eps) {
  Tensor xd = x.to(torch::kFloat64);
  Tensor rms = torch::sqrt(xd.pow(2).mean(-1, true) + eps);
  return (xd / rms) * w.to(torch::kFloat64);
}

TEST_F(ReferenceTest, RmsNormMatchesDoubleFp32) {
  Tensor x = torch::randn({3, 5, 17});
  Tensor w = torch::randn({17});
  Tensor y = reference::RmsNorm(x, w, 1e-6);
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(Close(y, RmsNormDouble(x, w, 1e-6), 1e-6, 1e-5));
}

TEST_F(ReferenceTest, RmsNormMatchesDoubleBf16) {
  Tensor x = torch::randn({4, 33}).to(torch::kBFloat16);
  Tensor w = torch::randn({33}).to(torch::kBFloat16);
  Tensor y = reference::RmsNorm(x, w, 1e-5);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  // Two bf16 roundings (normalised value, product): within 2 ulp.
  EXPECT_TRUE(Close(y, RmsNormDouble(x, w, 1e-5), 1e-2, 1.6e-2));
}

TEST_F(ReferenceTest, RmsNormGradientsMatchDouble) {
  Tensor x = torch::randn({6, 24}, torch::kFloat64).requires_grad_(true);
  Tensor w = torch::randn({24}, torch::kFloat64).requires_grad_(true);
  Tensor x32 = x.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor w32 = w.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor dy = torch::randn({6, 24}, torch::kFloat64);
  RmsNormDouble(x, w, 1e-6).backward(dy);
  reference::RmsNorm(x32, w32, 1e-6).backward(dy.to(torch::kFloat32));
  EXPECT_TRUE(Close(x32.grad(), x.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(Close(w32.grad(), w.grad(), 1e-5, 1e-4));
}

TEST_F(ReferenceTest, RmsNormZeroRows) {
  Tensor y = reference::RmsNorm(torch::zeros({0, 8}), torch::ones({8}), 1e-6);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{0, 8}));
}

// ---------------------------------------------------------------- RoPE

// out[j] = x[j]·cos[j] − x[j+h]·sin[j]; out[j+h] = x[j+h]·cos[j+h] + x[j]·sin[j+h].
Tensor RotateExplicit(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  Tensor xd = x.to(torch::kFloat64);
  Tensor out = torch::empty_like(xd);
  auto xa = xd.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  Tensor cd = cos.to(torch::kFloat64);
  Tensor sd = sin.to(torch::kFloat64);
  auto ca = cd.accessor<double, 3>();
  auto sa = sd.accessor<double, 3>();
  const int64_t half = x.size(3) / 2;
  for (int64_t b = 0; b < x.size(0); ++b) {
    for (int64_t h = 0; h < x.size(1); ++h) {
      for (int64_t t = 0; t < x.size(2); ++t) {
        for (int64_t j = 0; j < half; ++j) {
          oa[b][h][t][j] = xa[b][h][t][j] * ca[b][t][j] - xa[b][h][t][j + half] * sa[b][t][j];
          oa[b][h][t][j + half] =
              xa[b][h][t][j + half] * ca[b][t][j + half] + xa[b][h][t][j] * sa[b][t][j + half];
        }
      }
    }
  }
  return out;
}

// Llama's tables: angle t·θ_i for i < D/2, repeated for both halves.
std::pair<Tensor, Tensor> LlamaCosSin(int64_t batch, int64_t tokens, int64_t dim) {
  Tensor inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, dim, 2, torch::kFloat64) / dim);
  Tensor pos = torch::arange(tokens, torch::kFloat64);
  Tensor freqs = torch::outer(pos, inv_freq);  // (T, D/2)
  Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(0).expand({batch, tokens, dim});
  return {emb.cos().to(torch::kFloat32).contiguous(), emb.sin().to(torch::kFloat32).contiguous()};
}

TEST_F(ReferenceTest, RopeMatchesExplicitRotationWithGqaHeads) {
  auto [cos, sin] = LlamaCosSin(2, 7, 16);
  Tensor q = torch::randn({2, 8, 7, 16});  // 8 query heads
  Tensor k = torch::randn({2, 2, 7, 16});  // 2 key/value heads
  auto [qo, ko] = reference::ApplyRope(q, k, cos, sin);
  EXPECT_TRUE(Close(qo, RotateExplicit(q, cos, sin), 1e-6, 1e-5));
  EXPECT_TRUE(Close(ko, RotateExplicit(k, cos, sin), 1e-6, 1e-5));
}

TEST_F(ReferenceTest, RopeMatchesExplicitRotationWithArbitraryTables) {
  // Halves of cos/sin that differ: checks which half's sin each output uses.
  Tensor cos = torch::randn({1, 5, 10});
  Tensor sin = torch::randn({1, 5, 10});
  Tensor q = torch::randn({1, 3, 5, 10});
  Tensor k = torch::randn({1, 1, 5, 10});
  auto [qo, ko] = reference::ApplyRope(q, k, cos, sin);
  EXPECT_TRUE(Close(qo, RotateExplicit(q, cos, sin), 1e-6, 1e-5));
  EXPECT_TRUE(Close(ko, RotateExplicit(k, cos, sin), 1e-6, 1e-5));
}

TEST_F(ReferenceTest, RopeBackwardIsRotationByMinusSin) {
  auto [cos, sin] = LlamaCosSin(1, 6, 8);
  Tensor q = torch::randn({1, 4, 6, 8}, torch::kFloat64).requires_grad_(true);
  Tensor k = torch::randn({1, 2, 6, 8}, torch::kFloat64).requires_grad_(true);
  Tensor gq = torch::randn({1, 4, 6, 8}, torch::kFloat64);
  Tensor gk = torch::randn({1, 2, 6, 8}, torch::kFloat64);
  auto [qo, ko] = reference::ApplyRope(q, k, cos.to(torch::kFloat64), sin.to(torch::kFloat64));
  torch::autograd::backward({qo, ko}, {gq, gk});
  EXPECT_TRUE(Close(q.grad(), RotateExplicit(gq, cos, -sin), 1e-12, 1e-10));
  EXPECT_TRUE(Close(k.grad(), RotateExplicit(gk, cos, -sin), 1e-12, 1e-10));
}

// ---------------------------------------------------------------- SwiGLU

TEST_F(ReferenceTest, SwiGluMatchesDoubleFormulaAndGradients) {
  Tensor g = (torch::randn({5, 31}, torch::kFloat64) * 3).requires_grad_(true);
  Tensor u = torch::randn({5, 31}, torch::kFloat64).requires_grad_(true);
  Tensor g32 = g.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor u32 = u.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor expected = g / (1 + torch::exp(-g)) * u;
  Tensor y = reference::SwiGlu(g32, u32);
  EXPECT_TRUE(Close(y, expected, 1e-6, 1e-5));
  Tensor dy = torch::randn({5, 31}, torch::kFloat64);
  expected.backward(dy);
  y.backward(dy.to(torch::kFloat32));
  EXPECT_TRUE(Close(g32.grad(), g.grad(), 1e-6, 1e-5));
  EXPECT_TRUE(Close(u32.grad(), u.grad(), 1e-6, 1e-5));
}

// ---------------------------------------------------------------- GeGLU

TEST_F(ReferenceTest, GeGluMatchesDoubleFormulaAndGradients) {
  // gelu_tanh(g) = 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))), written out.
  Tensor g = (torch::randn({5, 31}, torch::kFloat64) * 3).requires_grad_(true);
  Tensor u = torch::randn({5, 31}, torch::kFloat64).requires_grad_(true);
  Tensor g32 = g.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor u32 = u.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor expected =
      0.5 * g * (1 + torch::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g.pow(3)))) * u;
  Tensor y = reference::GeGlu(g32, u32);
  EXPECT_TRUE(Close(y, expected, 1e-6, 1e-5));
  Tensor dy = torch::randn({5, 31}, torch::kFloat64);
  expected.backward(dy);
  y.backward(dy.to(torch::kFloat32));
  EXPECT_TRUE(Close(g32.grad(), g.grad(), 1e-6, 1e-5));
  EXPECT_TRUE(Close(u32.grad(), u.grad(), 1e-6, 1e-5));
}

// ---------------------------------------------------------- Gemma RMSNorm

TEST_F(ReferenceTest, GemmaRmsNormScalesByOnePlusWeightBeforeTheCast) {
  Tensor x = torch::randn({4, 24}, torch::kFloat64) * 2;
  Tensor w = torch::randn({24}, torch::kFloat64) * 0.3;
  Tensor expected = x / torch::sqrt(x.pow(2).mean(-1, true) + 1e-6) * (1 + w);
  EXPECT_TRUE(Close(reference::GemmaRmsNorm(x.to(torch::kFloat32), w.to(torch::kFloat32), 1e-6),
                    expected, 1e-6, 1e-5));
  // In bf16 the product is taken in fp32 and rounded once (Llama's RmsNorm
  // rounds the normalised x first, then multiplies in bf16).
  Tensor xb = x.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
  Tensor once =
      (xb.to(torch::kFloat64) / torch::sqrt(xb.to(torch::kFloat64).pow(2).mean(-1, true) + 1e-6) *
       (1 + wb.to(torch::kFloat64)))
          .to(torch::kBFloat16);
  Tensor got = reference::GemmaRmsNorm(xb, wb, 1e-6);
  EXPECT_EQ(got.scalar_type(), torch::kBFloat16);
  EXPECT_LE((got.to(torch::kFloat64) - once.to(torch::kFloat64)).abs().max().item<double>(),
            0.02 * once.to(torch::kFloat64).abs().max().item<double>());
}

// ------------------------------------------------ Linear + cross-entropy

// LibTorch's cross-entropy over all N rows of logits at once (fp32, or
// float64 for float64 inputs).
Tensor FullCrossEntropySum(const Tensor& h, const Tensor& w, const Tensor& labels) {
  Tensor logits = torch::matmul(h, w.t());
  if (logits.scalar_type() != torch::kFloat64) logits = logits.to(torch::kFloat32);
  return torch::nn::functional::cross_entropy(
      logits, labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

struct LceCase {
  int64_t n;
  int64_t c;
  int64_t v;
  int64_t chunk;
};

class LinearCrossEntropyTest : public ReferenceTest,
                               public ::testing::WithParamInterface<LceCase> {};

TEST_P(LinearCrossEntropyTest, MatchesFullCrossEntropyAndGradients) {
  const LceCase p = GetParam();
  Tensor h = torch::randn({p.n, p.c}, torch::kFloat64).requires_grad_(true);
  Tensor w = (torch::randn({p.v, p.c}, torch::kFloat64) * 0.3).requires_grad_(true);
  Tensor labels = torch::randint(0, p.v, {p.n}, torch::kInt64);
  for (int64_t i = 0; i < p.n; i += 3) labels[i] = -100;  // every third token ignored
  Tensor h32 = h.detach().to(torch::kFloat32).requires_grad_(true);
  Tensor w32 = w.detach().to(torch::kFloat32).requires_grad_(true);

  Tensor expected = FullCrossEntropySum(h, w, labels);
  Tensor loss = reference::LinearCrossEntropySum(h32, w32, labels, p.chunk);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(Close(loss, expected, 1e-5, 1e-5));

  expected.backward(torch::full({}, 0.5, torch::kFloat64));
  loss.backward(torch::full({}, 0.5));
  EXPECT_TRUE(Close(h32.grad(), h.grad(), 1e-6, 1e-4));
  EXPECT_TRUE(Close(w32.grad(), w.grad(), 1e-6, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(OddSizes, LinearCrossEntropyTest,
                         ::testing::Values(LceCase{37, 19, 101, 5}, LceCase{37, 19, 101, 1},
                                           LceCase{37, 19, 101, 37}, LceCase{37, 19, 101, 0},
                                           LceCase{37, 19, 101, 1000}, LceCase{1, 7, 13, 4},
                                           LceCase{2, 3, 2, 4}));

TEST_F(ReferenceTest, LinearCrossEntropyWithoutGradMatchesWithGrad) {
  Tensor h = torch::randn({11, 8});
  Tensor w = torch::randn({23, 8});
  Tensor labels = torch::randint(0, 23, {11}, torch::kInt64);
  Tensor plain = reference::LinearCrossEntropySum(h, w, labels, 4);
  EXPECT_FALSE(plain.requires_grad());
  Tensor graded = reference::LinearCrossEntropySum(h.requires_grad_(true), w, labels, 4);
  EXPECT_TRUE(graded.requires_grad());
  // The gradient path is the chunked Function (no (N, V) logits kept alive).
  EXPECT_THAT(graded.grad_fn()->name(), HasSubstr("ChunkedLinearCrossEntropyFn"));
  EXPECT_TRUE(Close(plain, graded, 0, 0));
  EXPECT_TRUE(Close(plain, FullCrossEntropySum(h, w, labels), 1e-5, 1e-5));
}

TEST_F(ReferenceTest, LinearCrossEntropyEmptyBatchIsZeroWithZeroGradients) {
  Tensor h = torch::randn({0, 8}).requires_grad_(true);
  Tensor w = torch::randn({10, 8}).requires_grad_(true);
  Tensor loss = reference::LinearCrossEntropySum(h, w, torch::zeros({0}, torch::kInt64), 4);
  EXPECT_EQ(loss.item<float>(), 0.0f);
  loss.backward();
  EXPECT_EQ(h.grad().sizes(), (std::vector<int64_t>{0, 8}));
  EXPECT_EQ(w.grad().abs().sum().item<float>(), 0.0f);
}

TEST_F(ReferenceTest, LinearCrossEntropySingleToken) {
  Tensor h = torch::randn({1, 6});
  Tensor w = torch::randn({9, 6});
  Tensor labels = torch::full({1}, 4, torch::kInt64);
  Tensor loss = reference::LinearCrossEntropySum(h, w, labels, 4096);
  Tensor logits = torch::matmul(h, w.t())[0].to(torch::kFloat64);
  const double expected = torch::logsumexp(logits, 0).item<double>() - logits[4].item<double>();
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5);
}

TEST_F(ReferenceTest, LinearCrossEntropyAllIgnoredIsZeroWithZeroGradients) {
  Tensor h = torch::randn({5, 4}).requires_grad_(true);
  Tensor w = torch::randn({7, 4}).requires_grad_(true);
  Tensor loss = reference::LinearCrossEntropySum(h, w, torch::full({5}, -100, torch::kInt64), 2);
  EXPECT_EQ(loss.item<float>(), 0.0f);
  loss.backward();
  EXPECT_EQ(h.grad().abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(w.grad().abs().sum().item<float>(), 0.0f);
}

TEST_F(ReferenceTest, LinearCrossEntropyRejectsOutOfRangeLabel) {
  Tensor h = torch::randn({3, 4});
  Tensor w = torch::randn({7, 4});
  Tensor labels = torch::tensor({1, 7, -100}, torch::kInt64);
  try {
    reference::LinearCrossEntropySum(h, w, labels, 2);
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("every label must be -100 or in [0, 7)"));
  }
}

TEST_F(ReferenceTest, LinearCrossEntropyBf16MatchesFullCrossEntropy) {
  Tensor h = torch::randn({13, 16}).to(torch::kBFloat16).requires_grad_(true);
  Tensor w = (torch::randn({29, 16}) * 0.3).to(torch::kBFloat16).requires_grad_(true);
  Tensor labels = torch::randint(0, 29, {13}, torch::kInt64);
  Tensor h2 = h.detach().clone().requires_grad_(true);
  Tensor w2 = w.detach().clone().requires_grad_(true);
  Tensor loss = reference::LinearCrossEntropySum(h, w, labels, 4);
  Tensor expected = FullCrossEntropySum(h2, w2, labels);
  EXPECT_TRUE(Close(loss, expected, 1e-3, 1e-3));
  loss.backward();
  expected.backward();
  EXPECT_TRUE(Close(h.grad(), h2.grad(), 2e-2, 2e-2));
  EXPECT_TRUE(Close(w.grad(), w2.grad(), 2e-2, 2e-2));
}

// ---------------------------------------------------------------- Dispatch

TEST_F(ReferenceTest, EveryBackendRunsTheReferenceOnCpuTensors) {
  Tensor x = torch::randn({4, 12});
  Tensor w = torch::randn({12});
  auto [cos, sin] = LlamaCosSin(1, 3, 8);
  Tensor q = torch::randn({1, 2, 3, 8});
  Tensor k = torch::randn({1, 1, 3, 8});
  Tensor h = torch::randn({5, 12});
  Tensor lw = torch::randn({9, 12});
  Tensor labels = torch::randint(0, 9, {5}, torch::kInt64);
  for (Backend b : {Backend::kAuto, Backend::kReference, Backend::kFused}) {
    SetBackend(b);
    EXPECT_EQ(GetBackend(), b);
    EXPECT_TRUE(Close(RmsNorm(x, w, 1e-6), reference::RmsNorm(x, w, 1e-6), 0, 0));
    EXPECT_TRUE(
        Close(ApplyRope(q, k, cos, sin).first, reference::ApplyRope(q, k, cos, sin).first, 0, 0));
    EXPECT_TRUE(Close(SwiGlu(x, x), reference::SwiGlu(x, x), 0, 0));
    EXPECT_TRUE(Close(GeGlu(x, x), reference::GeGlu(x, x), 0, 0));
    EXPECT_TRUE(Close(GemmaRmsNorm(x, w, 1e-6), reference::GemmaRmsNorm(x, w, 1e-6), 0, 0));
    EXPECT_TRUE(Close(LinearCrossEntropySum(h, lw, labels),
                      reference::LinearCrossEntropySum(h, lw, labels, 4096), 0, 0));
  }
  SetBackend(Backend::kAuto);
}

}  // namespace
}  // namespace fjord::kernels
