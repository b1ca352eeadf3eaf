#include "runtime/eval/stats.h"

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/status_matchers.h"

namespace fjord::eval {
namespace {

using ::fjord::status_testing::StatusIs;
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

TEST(SplitMix64Test, KnownValuesAndAnUnbiasedIndex) {
  // The published SplitMix64 sequences (Vigna's splitmix64.c) from seeds 0
  // and 1234567.
  SplitMix64 zero(0);
  EXPECT_EQ(zero.Next(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(zero.Next(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(zero.Next(), 0x06C45D188009454FULL);
  SplitMix64 gen(1234567);
  EXPECT_EQ(gen.Next(), 6457827717110365317ULL);
  EXPECT_EQ(gen.Next(), 3203168211198807973ULL);
  EXPECT_EQ(gen.Next(), 9817491932198370423ULL);
  // Indices from the Python reference (tests/interop/
  // test_bootstrap_reference.py). n = 2^63 + 1 rejects about half the
  // draws: 8 indices take 11 draws, so the rejection loop is exercised.
  SplitMix64 small(7);
  std::vector<uint64_t> got;
  for (int i = 0; i < 10; ++i) got.push_back(small.UniformIndex(10));
  EXPECT_EQ(got, (std::vector<uint64_t>{3, 0, 9, 5, 4, 2, 4, 3, 1, 4}));
  SplitMix64 big(0);
  got.clear();
  for (int i = 0; i < 8; ++i) got.push_back(big.UniformIndex((1ULL << 63) + 1));
  EXPECT_EQ(got, (std::vector<uint64_t>{243808509735772839ULL, 8954805688390271222ULL,
                                        980875101213047373ULL, 1603648013000153456ULL,
                                        7116260932800173470ULL, 2266080580496311649ULL,
                                        8780933256989530195ULL, 3656771639923220100ULL}));
  SplitMix64 after(0);
  for (int i = 0; i < 11; ++i) after.Next();
  EXPECT_EQ(after.Next(), big.Next());  // exactly 11 draws were used
}

TEST(PairedBootstrapTest, FixedDataGivesTheReferenceInterval) {
  // The Python reference (tests/interop/test_bootstrap_reference.py,
  // "binary_ties") gives exactly these: the mean 0.375, the interval
  // [0.125, 0.75] from 2000 resamples with seed 9.
  absl::StatusOr<PairedDifference> d =
      PairedBootstrap({1, 0, 1, 1, 0, 1, 0, 1}, {0, 0, 1, 0, 0, 1, 0, 0}, {.seed = 9});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->mean, 0.375);
  EXPECT_EQ(d->low, 0.125);
  EXPECT_EQ(d->high, 0.75);
  EXPECT_EQ(d->verdict, Verdict::kBetter);
}

TEST(MeanBootstrapTest, TheIntervalOfOneCandidatesMean) {
  absl::StatusOr<MeanInterval> m = MeanBootstrap({1, 0, 1, 1, 0, 1, 0, 1}, {.seed = 9});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->n, 8);
  EXPECT_EQ(m->mean, 0.625);
  // The Python reference's values ("scores").
  EXPECT_EQ(m->low, 0.25);
  EXPECT_EQ(m->high, 0.875);
  // The same resamples as the paired bootstrap of x against zeros.
  absl::StatusOr<PairedDifference> d =
      PairedBootstrap({1, 0, 1, 1, 0, 1, 0, 1}, std::vector<double>(8, 0.0), {.seed = 9});
  EXPECT_EQ(d->low, m->low);
  EXPECT_EQ(d->high, m->high);
  // One example: every resample is that example.
  m = MeanBootstrap({-1.25}, {.iterations = 10});
  EXPECT_EQ(m->low, -1.25);
  EXPECT_EQ(m->high, -1.25);
}

TEST(MeanBootstrapTest, BadInputsAreRefused) {
  EXPECT_THAT(MeanBootstrap({}, {}), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("mean bootstrap: no examples")));
  EXPECT_THAT(MeanBootstrap({1, INFINITY}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("example 1")));
  EXPECT_THAT(MeanBootstrap({1}, {.confidence = 0.0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("confidence")));
  EXPECT_THAT(MeanBootstrap({1}, {.iterations = -3}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("iterations")));
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
