// AdamW against torch.optim.AdamW's numbers, state round trip, schedules,
// gradient clipping.
#include "runtime/train/optimizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <map>

namespace fjord::train {
namespace {

using ::testing::HasSubstr;

torch::Tensor Param(std::vector<float> v) {
  return torch::tensor(v, torch::kFloat32).requires_grad_(true);
}

void SetGrad(torch::Tensor& p, std::vector<float> g) {
  p.mutable_grad() = torch::tensor(g, torch::kFloat32);
}

TEST(AdamWTest, MatchesTorchOptimAdamW) {
  // torch 2.15: AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8,
  // weight_decay=0.01) from p = [1, -2, 0.5] with two gradients.
  torch::Tensor p = Param({1.0f, -2.0f, 0.5f});
  AdamWOptions o;
  o.weight_decay = 0.01;
  AdamW opt({{"p", p}}, o);
  SetGrad(p, {0.1f, -0.2f, 0.3f});
  opt.Step(0.1);
  EXPECT_NEAR(p[0].item<float>(), 0.898999989f, 1e-6);
  EXPECT_NEAR(p[1].item<float>(), -1.898f, 1e-6);
  EXPECT_NEAR(p[2].item<float>(), 0.399500012f, 1e-6);
  SetGrad(p, {-0.5f, 0.4f, 0.0f});
  opt.Step(0.1);
  EXPECT_NEAR(p[0].item<float>(), 0.957936406f, 1e-6);
  EXPECT_NEAR(p[1].item<float>(), -1.93271244f, 1e-6);
  EXPECT_NEAR(p[2].item<float>(), 0.332094699f, 1e-6);
  const auto state = opt.StateTensors();
  ASSERT_EQ(state.size(), 3u);
  EXPECT_EQ(state[0].first, "p.exp_avg");
  EXPECT_NEAR(state[0].second[0].item<float>(), -0.041f, 1e-7);
  EXPECT_NEAR(state[1].second[2].item<float>(), 8.991001232e-05f, 1e-10);
  EXPECT_EQ(state[2].first, "step");
  EXPECT_EQ(state[2].second.item<int64_t>(), 2);
}

TEST(AdamWTest, OnlyParametersWithGradientsMove) {
  torch::Tensor a = Param({1.0f}), b = Param({2.0f});
  AdamWOptions o;
  o.weight_decay = 0.5;
  AdamW opt({{"a", a}, {"b", b}}, o);
  SetGrad(a, {1.0f});
  opt.Step(0.01);
  EXPECT_NE(a.item<float>(), 1.0f);
  EXPECT_EQ(b.item<float>(), 2.0f);  // no gradient: no update, no decay
  opt.ZeroGrad();
  EXPECT_FALSE(a.grad().defined());
}

TEST(AdamWTest, StateRoundTripContinuesBitForBit) {
  torch::manual_seed(1);
  torch::Tensor p1 = torch::randn({4, 3}).requires_grad_(true);
  torch::Tensor p2 = p1.detach().clone().requires_grad_(true);
  AdamW a({{"w", p1}}, {});
  std::vector<torch::Tensor> grads;
  for (int i = 0; i < 4; ++i) grads.push_back(torch::randn({4, 3}));
  for (int i = 0; i < 2; ++i) {
    p1.mutable_grad() = grads[i].clone();
    a.Step(1e-2);
  }
  std::map<std::string, torch::Tensor> saved;
  for (auto& [name, t] : a.StateTensors()) saved[name] = t.clone();
  {
    torch::NoGradGuard g;
    p2.copy_(p1);
  }
  AdamW b({{"w", p2}}, {});
  ASSERT_TRUE(b.LoadStateTensors(saved).ok());
  EXPECT_EQ(b.step(), 2);
  for (int i = 2; i < 4; ++i) {
    p1.mutable_grad() = grads[i].clone();
    p2.mutable_grad() = grads[i].clone();
    a.Step(1e-2);
    b.Step(1e-2);
  }
  EXPECT_TRUE(torch::equal(p1, p2));
}

TEST(AdamWTest, LoadStateRefusesMissingOrMisshapedTensors) {
  torch::Tensor p = Param({1.0f, 2.0f});
  AdamW opt({{"w", p}}, {});
  std::map<std::string, torch::Tensor> state = {{"step", torch::tensor(int64_t{3})},
                                                {"w.exp_avg", torch::zeros({2})}};
  EXPECT_THAT(opt.LoadStateTensors(state).message(), HasSubstr("tensor 'w.exp_avg_sq' missing"));
  state["w.exp_avg_sq"] = torch::zeros({3});
  EXPECT_THAT(opt.LoadStateTensors(state).message(),
              HasSubstr("'w.exp_avg_sq' has the wrong shape"));
  state.erase("step");
  EXPECT_THAT(opt.LoadStateTensors(state).message(), HasSubstr("'step' missing"));
}

TEST(LearningRateTest, WarmupThenDecay) {
  // Warmup: (step + 1) / warmup of the peak.
  EXPECT_DOUBLE_EQ(LearningRate("cosine", 1.0, 0, 100, 10, 0.0), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate("cosine", 1.0, 9, 100, 10, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate("cosine", 1.0, 10, 100, 10, 0.0), 1.0);
  EXPECT_NEAR(LearningRate("cosine", 1.0, 55, 100, 10, 0.0), 0.5, 1e-12);
  EXPECT_NEAR(LearningRate("cosine", 1.0, 100, 100, 10, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(LearningRate("linear", 2.0, 55, 100, 10, 0.0), 1.0, 1e-12);
  EXPECT_NEAR(LearningRate("linear", 2.0, 100, 100, 10, 0.25), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(LearningRate("constant", 3.0, 77, 100, 10, 0.0), 3.0);
  EXPECT_DOUBLE_EQ(LearningRate("constant", 3.0, 4, 100, 10, 0.0), 1.5);
}

TEST(ClipGradNormTest, ScalesToTheLimitAndReportsTheNormBefore) {
  torch::Tensor a = Param({0, 0}), b = Param({0});
  SetGrad(a, {3.0f, 0.0f});
  SetGrad(b, {4.0f});
  EXPECT_NEAR(ClipGradNorm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<float>(), 0.8f, 1e-5);
  EXPECT_NEAR(ClipGradNorm({a, b}, 10.0), 1.0, 1e-5);  // under the limit: unchanged
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(ClipGradNorm({a, b}, 0.0), 1.0, 1e-5);  // <= 0: no clipping
}

}  // namespace
}  // namespace fjord::train
