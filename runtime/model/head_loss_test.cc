#include "runtime/model/head_loss.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <string>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/linear.h"

namespace fjord::model {
namespace {

using ::testing::HasSubstr;
using torch::Tensor;

constexpr int64_t kRows = 37, kHidden = 16, kVocab = 50, kRank = 4;

struct Case {
  Tensor hidden;  // (N, C), requires grad
  Tensor labels;  // (N)
  LinearParts head;
};

// A head with or without bias and update; B non-zero so the update counts.
Case MakeCase(bool bias, bool update, double dropout) {
  torch::manual_seed(11);
  Case c;
  c.hidden = torch::randn({kRows, kHidden}).requires_grad_(true);
  c.labels = torch::randint(0, kVocab, {kRows}, torch::kInt64);
  c.labels.index_put_({torch::tensor({0, 5, 6, 36})}, -100);
  c.head.weight = torch::randn({kVocab, kHidden}) * 0.3;
  if (bias) c.head.bias = torch::randn({kVocab}) * 0.1;
  if (update) {
    c.head.a = (torch::randn({kRank, kHidden}) * 0.2).requires_grad_(true);
    c.head.b = (torch::randn({kVocab, kRank}) * 0.2).requires_grad_(true);
    c.head.scale = 1.5;
    c.head.dropout = dropout;
  }
  return c;
}

// The oracle: every logit at once, through autograd. `input` is what the
// update reads (dropout(hidden)).
Tensor FullLogitsLoss(const Case& c, const Tensor& input, double cap) {
  Tensor l = torch::matmul(c.hidden, c.head.weight.t());
  if (c.head.a.defined()) {
    l = l + c.head.scale * torch::matmul(torch::matmul(input, c.head.a.t()), c.head.b.t());
  }
  if (c.head.bias.defined()) l = l + c.head.bias;
  if (cap > 0) l = torch::tanh(l / cap) * cap;
  return torch::nn::functional::cross_entropy(
      l, c.labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

struct Grads {
  double loss;
  Tensor dhidden, da, db;
};

Grads Backward(const Case& c, const Tensor& loss) {
  for (Tensor t : {c.hidden, c.head.a, c.head.b}) {
    if (t.defined() && t.grad().defined()) t.mutable_grad() = Tensor();
  }
  (loss * 3).backward();  // an upstream gradient other than 1
  Grads g{loss.item<double>(), c.hidden.grad().clone(), Tensor(), Tensor()};
  if (c.head.a.defined()) {
    g.da = c.head.a.grad().clone();
    g.db = c.head.b.grad().clone();
  }
  return g;
}

class HeadLossTest
    : public ::testing::TestWithParam<std::tuple<bool, bool, double, double, int64_t>> {};

TEST_P(HeadLossTest, EqualsTheLossAndGradientsOfAllLogitsAtOnce) {
  const auto [bias, update, dropout, cap, chunk] = GetParam();
  Case c = MakeCase(bias, update, dropout);
  torch::manual_seed(3);
  Grads got = Backward(c, HeadCrossEntropySum(c.hidden, c.head, c.labels, chunk, cap));
  // The same dropout mask: the same seed and the same draw.
  torch::manual_seed(3);
  const Tensor input =
      update && dropout > 0 ? torch::dropout(c.hidden, dropout, /*train=*/true) : c.hidden;
  Grads want = Backward(c, FullLogitsLoss(c, input, cap));
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss));
  EXPECT_TRUE(torch::allclose(got.dhidden, want.dhidden, 1e-4, 1e-5))
      << (got.dhidden - want.dhidden).abs().max();
  if (update) {
    EXPECT_EQ(got.da.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::allclose(got.da, want.da, 1e-4, 1e-5)) << (got.da - want.da).abs().max();
    EXPECT_TRUE(torch::allclose(got.db, want.db, 1e-4, 1e-5)) << (got.db - want.db).abs().max();
    EXPECT_GT(got.db.abs().max().item<double>(), 0);
  }
  // Without gradients, the same loss (and no autograd history).
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  const Tensor plain = HeadCrossEntropySum(c.hidden, c.head, c.labels, chunk, cap);
  EXPECT_FALSE(plain.requires_grad());
  EXPECT_NEAR(plain.item<double>(), want.loss, 1e-5 * std::abs(want.loss));
}

INSTANTIATE_TEST_SUITE_P(BiasUpdateDropoutCapChunk, HeadLossTest,
                         ::testing::Values(std::make_tuple(true, false, 0.0, 0.0, int64_t{8}),
                                           std::make_tuple(false, false, 0.0, 5.0, int64_t{8}),
                                           std::make_tuple(false, true, 0.0, 0.0, int64_t{8}),
                                           std::make_tuple(false, true, 0.0, 0.0, int64_t{0}),
                                           std::make_tuple(true, true, 0.0, 5.0, int64_t{7}),
                                           std::make_tuple(false, true, 0.3, 0.0, int64_t{10}),
                                           std::make_tuple(true, true, 0.3, 5.0, int64_t{100})));

TEST(HeadLossTest, Bf16HiddenWithFp32AdapterKeepsTheAdaptersDtype) {
  Case c = MakeCase(false, true, 0.0);
  const Tensor h = c.hidden.detach().to(torch::kBFloat16).requires_grad_(true);
  LinearParts head = c.head;
  head.weight = c.head.weight.to(torch::kBFloat16);
  const Tensor loss = HeadCrossEntropySum(h, head, c.labels, 8, 0.0);
  loss.backward();
  EXPECT_EQ(h.grad().scalar_type(), torch::kBFloat16);
  EXPECT_EQ(c.head.a.grad().scalar_type(), torch::kFloat32);
  EXPECT_EQ(c.head.b.grad().scalar_type(), torch::kFloat32);
  const Tensor b_grad = c.head.b.grad().clone();
  c.head.a.mutable_grad() = Tensor();
  c.head.b.mutable_grad() = Tensor();
  Grads want = Backward(c, FullLogitsLoss(c, c.hidden, 0.0));
  EXPECT_NEAR(loss.item<double>(), want.loss, 2e-2 * std::abs(want.loss));
  EXPECT_TRUE(torch::allclose(b_grad, want.db / 3, 5e-2, 5e-2));
}

TEST(HeadLossTest, BadInputsAreClearErrors) {
  Case c = MakeCase(true, true, 0.0);
  auto message = [&](const LinearParts& head, const Tensor& labels) -> std::string {
    try {
      HeadCrossEntropySum(c.hidden, head, labels, 8, 0.0);
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "accepted";
  };
  Tensor labels = c.labels.clone();
  labels[3] = kVocab;
  EXPECT_THAT(message(c.head, labels), HasSubstr("every label must be -100 or in [0, 50)"));
  LinearParts trainable = c.head;
  trainable.weight = c.head.weight.clone().requires_grad_(true);
  EXPECT_THAT(message(trainable, c.labels), HasSubstr("weight and bias must be frozen"));
  LinearParts bad_b = c.head;
  bad_b.b = torch::zeros({kVocab, kRank + 1});
  EXPECT_THAT(message(bad_b, c.labels), HasSubstr("want A (r, 16) and B (50, r)"));
  LinearParts bad_bias = c.head;
  bad_bias.bias = torch::zeros({kVocab - 1});
  EXPECT_THAT(message(bad_bias, c.labels), HasSubstr("want a bias (50)"));
  EXPECT_THAT(message(c.head, c.labels.to(torch::kInt32)), HasSubstr("labels must be int64"));
}

}  // namespace
}  // namespace fjord::model
