// LoraLinear on CPU: PEFT's initialisation, gradients against central finite
// differences (float64) and against an unfused plain-ops formula, dropout,
// fp32 adapters on a bf16 base, merge/unmerge, the grouped form.
//
// Shape legend: N tokens, in, out features, r rank.
#include "lora/lora_linear.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <memory>

#include "lora/kernels/lora_ops.h"

namespace fjord::lora {
namespace {

using torch::Tensor;

at::Generator Gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

std::shared_ptr<DenseLinear> Dense(int64_t out, int64_t in, bool bias, torch::Dtype dtype,
                                   uint64_t seed) {
  torch::manual_seed(seed);
  Tensor w = torch::randn({out, in}, torch::kFloat64).mul(0.3).to(dtype);
  Tensor b = bias ? torch::randn({out}, torch::kFloat64).to(dtype) : Tensor();
  return std::make_shared<DenseLinear>(w, b);
}

// Fills B (zero after construction) so the adapter path matters.
void RandomizeB(LoraLinear& l, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  l.lora_B().copy_(torch::randn(l.lora_B().sizes(), torch::kFloat64).mul(0.5));
}

TEST(LoraLinearTest, InitialisesAsPeft) {
  auto base = Dense(48, 100, true, torch::kFloat32, 1);
  LoraLinear l(base, {8, 2.0, 0.0}, Gen(3));
  EXPECT_EQ(l.lora_A().sizes(), (std::vector<int64_t>{8, 100}));
  EXPECT_EQ(l.lora_B().sizes(), (std::vector<int64_t>{48, 8}));
  EXPECT_EQ(l.lora_A().scalar_type(), torch::kFloat32);
  EXPECT_TRUE(l.lora_A().requires_grad());
  EXPECT_FALSE(l.base_weight().requires_grad());
  // kaiming_uniform_(a=sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = 1.0 / std::sqrt(100.0);
  EXPECT_LE(l.lora_A().abs().max().item<double>(), bound);
  EXPECT_GT(l.lora_A().abs().max().item<double>(), 0.9 * bound);
  // Variance of U(-b, b) is b²/3.
  EXPECT_NEAR(l.lora_A().var().item<double>(), bound * bound / 3, 0.15 * bound * bound / 3);
  EXPECT_EQ(l.lora_B().abs().sum().item<double>(), 0.0);
  // A fresh adapter is the base layer, exactly.
  Tensor x = torch::randn({5, 100});
  EXPECT_TRUE(torch::equal(l.forward(x), base->forward(x)));
  // Same seed, same A.
  LoraLinear again(base, {8, 2.0, 0.0}, Gen(3));
  EXPECT_TRUE(torch::equal(again.lora_A(), l.lora_A()));
  // PEFT's state-dict names.
  std::vector<std::string> names;
  for (const auto& p : l.named_parameters()) names.push_back(p.key());
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("base_layer.weight", "base_layer.bias",
                                                     "lora_A.weight", "lora_B.weight"));
}

// y·R summed, for a scalar loss with a non-trivial upstream gradient.
double Loss(LoraLinear& l, const Tensor& x, const Tensor& r) {
  torch::NoGradGuard g;
  return (l.forward(x) * r).sum().item<double>();
}

TEST(LoraLinearTest, GradientsMatchFiniteDifferencesInFloat64) {
  const int64_t n = 6, in = 7, out = 5, rank = 3;
  auto base = Dense(out, in, true, torch::kFloat64, 2);
  LoraLinear::Options o;
  o.r = rank;
  o.scale = 1.75;
  o.dtype = torch::kFloat64;
  LoraLinear l(base, o, Gen(4));
  RandomizeB(l, 5);
  l.eval();
  torch::manual_seed(6);
  Tensor x = torch::randn({2, n / 2, in}, torch::kFloat64).requires_grad_(true);  // (B, T, in)
  Tensor r = torch::randn({2, n / 2, out}, torch::kFloat64);
  (l.forward(x) * r).sum().backward();
  const double eps = 1e-6;
  for (Tensor param : {l.lora_A(), l.lora_B(), x}) {
    Tensor analytic = param.grad().clone();
    Tensor flat = param.detach().view({-1});
    Tensor numeric = torch::zeros_like(flat);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double v = flat[i].item<double>();
      flat[i] = v + eps;
      const double up = Loss(l, x.detach(), r);
      flat[i] = v - eps;
      const double down = Loss(l, x.detach(), r);
      flat[i] = v;
      numeric[i] = (up - down) / (2 * eps);
    }
    EXPECT_LT((analytic.view({-1}) - numeric).abs().max().item<double>(), 1e-7)
        << "param of shape " << param.sizes();
  }
}

TEST(LoraLinearTest, MatchesUnfusedFormulaInFloat32) {
  const int64_t in = 40, out = 24, rank = 4;
  auto base = Dense(out, in, true, torch::kFloat32, 7);
  LoraLinear l(base, {rank, 0.5, 0.0}, Gen(8));
  RandomizeB(l, 9);
  torch::manual_seed(10);
  Tensor x = torch::randn({3, 4, in}).requires_grad_(true);
  Tensor g = torch::randn({3, 4, out});
  Tensor y = l.forward(x);
  y.backward(g);
  // Unfused: each product formed explicitly, leaves cloned.
  Tensor a = l.lora_A().detach().clone().requires_grad_(true);
  Tensor b = l.lora_B().detach().clone().requires_grad_(true);
  Tensor x2 = x.detach().clone().requires_grad_(true);
  Tensor delta = torch::matmul(b, a) * 0.5;  // (out, in)
  Tensor y2 = torch::matmul(x2, (base->base_weight() + delta).t()) + base->base_bias();
  y2.backward(g);
  EXPECT_TRUE(torch::allclose(y, y2, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(l.lora_A().grad(), a.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(l.lora_B().grad(), b.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(x.grad(), x2.grad(), 1e-4, 1e-5));
  EXPECT_FALSE(base->base_weight().grad().defined());  // frozen
}

TEST(LoraLinearTest, Fp32AdaptersOnABf16Base) {
  auto base = Dense(16, 32, false, torch::kBFloat16, 11);
  LoraLinear l(base, {4, 2.0, 0.0}, Gen(12));
  RandomizeB(l, 13);
  EXPECT_EQ(l.lora_A().scalar_type(), torch::kFloat32);
  Tensor x = torch::randn({8, 32}).to(torch::kBFloat16).requires_grad_(true);
  Tensor y = l.forward(x);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  y.to(torch::kFloat32).sum().backward();
  EXPECT_EQ(l.lora_A().grad().scalar_type(), torch::kFloat32);
  EXPECT_EQ(l.lora_B().grad().scalar_type(), torch::kFloat32);
  EXPECT_GT(l.lora_A().grad().abs().sum().item<double>(), 0);
}

TEST(LoraLinearTest, DropoutOnTheAdapterInputInTrainingOnly) {
  auto base = Dense(16, 64, false, torch::kFloat32, 14);
  LoraLinear l(base, {4, 1.0, 0.5}, Gen(15));
  RandomizeB(l, 16);
  Tensor x = torch::randn({32, 64});
  l.eval();
  Tensor y_eval = l.forward(x);
  EXPECT_TRUE(torch::equal(y_eval, l.forward(x)));
  l.train();
  torch::manual_seed(17);
  Tensor y1 = l.forward(x);
  torch::manual_seed(17);
  Tensor y2 = l.forward(x);
  EXPECT_TRUE(torch::equal(y1, y2));  // reproducible from the seed
  EXPECT_FALSE(torch::allclose(y1, y_eval));
  // The base path is untouched by dropout: y − base is the adapter alone,
  // which equals the masked reference for the mask torch::dropout drew.
  torch::manual_seed(17);
  Tensor dropped = torch::dropout(x, 0.5, true);
  Tensor mask = dropped / x;  // 0 or 2 (x has no zeros)
  Tensor ref = kernels::reference::LoraLinearMasked(x, base->base_weight(), Tensor(), l.lora_A(),
                                                    l.lora_B(), 1.0, mask);
  EXPECT_TRUE(torch::allclose(y1, ref, 1e-5, 1e-5));
}

TEST(LoraLinearTest, MergeAndUnmerge) {
  auto base = Dense(24, 40, true, torch::kFloat32, 18);
  const Tensor w0 = base->base_weight().clone();
  LoraLinear l(base, {4, 3.0, 0.0}, Gen(19));
  RandomizeB(l, 20);
  Tensor x = torch::randn({6, 40});
  Tensor y = l.forward(x);
  l.Merge();
  EXPECT_TRUE(l.merged());
  EXPECT_TRUE(torch::allclose(l.forward(x), y, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(base->base_weight(), w0 + l.DeltaWeight(), 0, 1e-6));
  l.Merge();  // no-op
  l.Unmerge();
  EXPECT_FALSE(l.merged());
  // Exact to fp32 rounding: within a few ulps of the original weight.
  const double ulp = std::ldexp(1.0, -23) * w0.abs().max().item<double>();
  EXPECT_LE((base->base_weight() - w0).abs().max().item<double>(), 4 * ulp);
  EXPECT_TRUE(torch::allclose(l.forward(x), y, 1e-5, 1e-5));
}

TEST(LoraLinearTest, GroupedEqualsSeparate) {
  auto q = Dense(32, 48, true, torch::kFloat32, 21);
  auto k = Dense(16, 48, true, torch::kFloat32, 22);
  LoraLinear lq(q, {4, 2.0, 0.0}, Gen(23));
  LoraLinear lk(k, {8, 1.0, 0.0}, Gen(24));
  RandomizeB(lq, 25);
  RandomizeB(lk, 26);
  Tensor x = torch::randn({2, 5, 48});
  std::vector<Tensor> ys = ForwardShared({&lq, &lk}, x);
  ASSERT_EQ(ys.size(), 2u);
  EXPECT_TRUE(torch::allclose(ys[0], lq.forward(x), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(ys[1], lk.forward(x), 1e-6, 1e-6));
  // A group with a plain layer falls back to separate forwards.
  ys = ForwardShared({&lq, k.get()}, x);
  ASSERT_EQ(ys.size(), 2u);
  EXPECT_TRUE(torch::equal(ys[1], k->forward(x)));
}

}  // namespace
}  // namespace fjord::lora
