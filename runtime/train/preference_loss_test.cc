#include "runtime/train/preference_loss.h"

#include <cmath>

#include "gtest/gtest.h"

namespace fjord::train {
namespace {

double LogSigmoid(double x) { return -std::log1p(std::exp(-x)); }

PairLogps Logps(std::vector<float> chosen, std::vector<float> rejected,
                std::vector<float> chosen_tokens = {1, 1},
                std::vector<float> rejected_tokens = {1, 1}) {
  PairLogps p;
  p.chosen = torch::tensor(chosen, torch::kFloat32).set_requires_grad(true);
  p.rejected = torch::tensor(rejected, torch::kFloat32);
  p.chosen_tokens = torch::tensor(chosen_tokens, torch::kFloat32);
  p.rejected_tokens = torch::tensor(rejected_tokens, torch::kFloat32);
  return p;
}

constexpr double kTol = 1e-5;

TEST(PreferenceLossTest, DpoSigmoidRewardsAndLabelSmoothing) {
  PreferenceLossOptions o;
  o.beta = 0.5;
  const PairLogps policy = Logps({-3, -5}, {-4, -2});
  const PairLogps ref = Logps({-3.5, -4}, {-3.5, -3});
  PreferenceTerms t = PreferenceLoss(o, policy, ref);
  // Pair 0: chosen ratio 0.5, rejected −0.5, Δ = 1; pair 1: −1, 1, Δ = −2.
  EXPECT_NEAR(t.chosen_rewards[0].item<double>(), 0.25, kTol);
  EXPECT_NEAR(t.rejected_rewards[1].item<double>(), 0.5, kTol);
  EXPECT_NEAR(t.losses[0].item<double>(), -LogSigmoid(0.5), kTol);
  EXPECT_NEAR(t.losses[1].item<double>(), -LogSigmoid(-1.0), kTol);
  t.losses.sum().backward();
  // d/dπ(c) of −logσ(βΔ) = −β·σ(−βΔ).
  EXPECT_NEAR(policy.chosen.grad()[0].item<double>(), -0.5 / (1 + std::exp(0.5)), kTol);

  o.label_smoothing = 0.1;
  t = PreferenceLoss(o, policy, ref);
  EXPECT_NEAR(t.losses[0].item<double>(), -0.9 * LogSigmoid(0.5) - 0.1 * LogSigmoid(-0.5), kTol);
  o.loss_type = "robust";
  t = PreferenceLoss(o, policy, ref);
  EXPECT_NEAR(t.losses[0].item<double>(), (-0.9 * LogSigmoid(0.5) + 0.1 * LogSigmoid(-0.5)) / 0.8,
              kTol);
  o.loss_type = "hinge";
  t = PreferenceLoss(o, policy, ref);
  EXPECT_NEAR(t.losses[0].item<double>(), 0.5, kTol);
  EXPECT_NEAR(t.losses[1].item<double>(), 2.0, kTol);
}

TEST(PreferenceLossTest, IpoIsLengthNormalised) {
  PreferenceLossOptions o;
  o.loss_type = "ipo";
  o.beta = 0.25;
  const PairLogps policy = Logps({-3, -5}, {-4, -2}, {2, 4}, {5, 1});
  const PairLogps ref = Logps({-4, -4}, {-3, -3});
  const PreferenceTerms t = PreferenceLoss(o, policy, ref);
  EXPECT_NEAR(t.losses[0].item<double>(), std::pow(1.0 / 2 - (-1.0) / 5 - 2.0, 2), kTol);
}

TEST(PreferenceLossTest, OrpoOddsRatioOnAverageLogps) {
  PreferenceLossOptions o;
  o.method = PreferenceMethod::kOrpo;
  o.beta = 0.2;
  const PairLogps policy = Logps({-2, -6}, {-6, -1}, {2, 3}, {3, 1});
  const PreferenceTerms t = PreferenceLoss(o, policy, PairLogps());
  const double c = -1.0, r = -2.0;  // pair 0 averages
  const double log_odds = (c - r) - (std::log(1 - std::exp(c)) - std::log(1 - std::exp(r)));
  EXPECT_NEAR(t.log_odds[0].item<double>(), log_odds, kTol);
  EXPECT_NEAR(t.losses[0].item<double>(), -0.2 * LogSigmoid(log_odds), kTol);
  EXPECT_NEAR(t.chosen_rewards[0].item<double>(), 0.2 * c, kTol);
  EXPECT_NEAR(t.chosen_logps[1].item<double>(), -2.0, kTol);
  EXPECT_EQ(NllWeight(o), 1.0);
  EXPECT_EQ(NllTokensFor(o), NllTokens::kChosenSequence);
}

TEST(PreferenceLossTest, SimpoMarginOverBeta) {
  PreferenceLossOptions o;
  o.method = PreferenceMethod::kSimpo;
  o.beta = 2.0;
  o.simpo_gamma = 0.5;
  const PairLogps policy = Logps({-2, -6}, {-6, -1}, {2, 3}, {3, 1});
  const PreferenceTerms t = PreferenceLoss(o, policy, PairLogps());
  EXPECT_NEAR(t.losses[0].item<double>(), -LogSigmoid(2.0 * (-1.0 + 2.0 - 0.25)), kTol);
  EXPECT_EQ(NllTokensFor(o), NllTokens::kNone);
  o.cpo_alpha = 1;
  EXPECT_EQ(NllTokensFor(o), NllTokens::kChosenResponse);
}

TEST(PreferenceLossTest, ParsesMethods) {
  EXPECT_FALSE(ParseTrainingMethod("sft")->has_value());
  EXPECT_EQ(**ParseTrainingMethod("orpo"), PreferenceMethod::kOrpo);
  EXPECT_EQ(ParseTrainingMethod("ppo").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fjord::train
