#include "runtime/eval/stats.h"

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::eval {
namespace {

using ::testing::HasSubstr;

TEST(PairedBootstrapTest, ASeparatedPairGetsAVerdictAndACloseOneDoesNot) {
  std::mt19937_64 gen(1);
  std::normal_distribution<double> noise(0.0, 0.1);
  std::vector<double> base, better, same;
  for (int i = 0; i < 200; ++i) {
    const double x = noise(gen);
    base.push_back(x);
    better.push_back(x + 0.05 + 0.01 * noise(gen));  // +0.05 on every example
    same.push_back(x + 0.01 * noise(gen));           // noise only
  }
  absl::StatusOr<PairedDifference> d = PairedBootstrap(better, base, {.seed = 3});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->n, 200);
  EXPECT_NEAR(d->mean, 0.05, 0.005);
  EXPECT_LT(d->low, d->mean);
  EXPECT_GT(d->high, d->mean);
  EXPECT_GT(d->low, 0.0);
  EXPECT_EQ(d->verdict, Verdict::kBetter);
  EXPECT_EQ(PairedBootstrap(base, better, {.seed = 3})->verdict, Verdict::kWorse);
  // For a loss lower is better: the same numbers read the other way.
  EXPECT_EQ(PairedBootstrap(better, base, {.seed = 3, .higher_is_better = false})->verdict,
            Verdict::kWorse);
  absl::StatusOr<PairedDifference> tie = PairedBootstrap(same, base, {.seed = 3});
  ASSERT_TRUE(tie.ok());
  EXPECT_LE(tie->low, 0.0);
  EXPECT_GE(tie->high, 0.0);
  EXPECT_EQ(tie->verdict, Verdict::kTie);
  EXPECT_STREQ(VerdictName(tie->verdict), "tie");
}

TEST(PairedBootstrapTest, SeededAndCoveringTheTrueMean) {
  // The same seed gives the same interval; over many independent samples a
  // 90% interval covers the true mean difference (0.1) about 90% of the time.
  std::vector<double> a = {1, 0, 1, 1, 0, 1, 0, 1}, b = {0, 0, 1, 0, 0, 1, 0, 0};
  EXPECT_EQ(PairedBootstrap(a, b, {.seed = 9})->low, PairedBootstrap(a, b, {.seed = 9})->low);
  std::mt19937_64 gen(5);
  std::normal_distribution<double> x(0.0, 1.0);
  int covered = 0;
  const int trials = 200;
  for (int t = 0; t < trials; ++t) {
    std::vector<double> u, v;
    for (int i = 0; i < 60; ++i) {
      u.push_back(0.1 + x(gen));
      v.push_back(0.0);
    }
    PairedDifference d = *PairedBootstrap(
        u, v, {.iterations = 500, .confidence = 0.9, .seed = static_cast<uint64_t>(t)});
    covered += d.low <= 0.1 && 0.1 <= d.high;
  }
  EXPECT_GT(covered, trials * 0.83);
  EXPECT_LT(covered, trials * 0.96);
}

TEST(PairedBootstrapTest, BadInputsAreRefused) {
  EXPECT_THAT(PairedBootstrap({1, 2}, {1}, {}).status().message(), HasSubstr("equal counts"));
  EXPECT_THAT(PairedBootstrap({}, {}, {}).status().message(), HasSubstr("no examples"));
  EXPECT_THAT(PairedBootstrap({NAN}, {1}, {}).status().message(), HasSubstr("example 0"));
  EXPECT_THAT(PairedBootstrap({1}, {1}, {.confidence = 1.0}).status().message(),
              HasSubstr("confidence"));
  EXPECT_THAT(PairedBootstrap({1}, {1}, {.iterations = 0}).status().message(),
              HasSubstr("iterations"));
}

TEST(RankWithTiesTest, OnlySignificantDifferencesSeparateRanks) {
  // 0 beats 2 and 3; 1 beats 3; nothing separates 0 and 1, 1 and 2, 2 and 3.
  const std::vector<std::vector<bool>> better = {
      {false, false, true, true},
      {false, false, false, true},
      {false, false, false, false},
      {false, false, false, false},
  };
  EXPECT_EQ(RankWithTies(better), (std::vector<int>{1, 1, 2, 3}));
  EXPECT_EQ(RankWithTies({{false, false}, {false, false}}), (std::vector<int>{1, 1}));
}

}  // namespace
}  // namespace fjord::eval
