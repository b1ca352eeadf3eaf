#include "runtime/eval/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::eval {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, NormalisationIsSquads) {
  EXPECT_EQ(NormalizeAnswer("  The Capital, of NORWAY is: Oslo!! "), "capital of norway is oslo");
  EXPECT_EQ(NormalizeAnswer("an apple a day"), "apple day");
  EXPECT_EQ(NormalizeAnswer("Tromsø"), "tromsø");  // non-ASCII kept as is
  EXPECT_EQ(NormalizeAnswer("..."), "");
}

TEST(MetricsTest, EachMetricOnRepliesAndAnswers) {
  EXPECT_EQ(ExactMatch(" Oslo\n", "Oslo"), 1.0);
  EXPECT_EQ(ExactMatch("oslo", "Oslo"), 0.0);
  EXPECT_EQ(NormalizedExactMatch("The Oslo.", "oslo"), 1.0);
  EXPECT_EQ(Contains("The capital is Oslo.", "oslo"), 1.0);
  EXPECT_EQ(Contains("Osloer", "oslo"), 0.0);  // whole words only
  EXPECT_EQ(Contains("anything", ""), 0.0);
  // Reply words {capital, is, oslo}, answer {oslo}: P 1/3, R 1, F1 0.5.
  EXPECT_DOUBLE_EQ(TokenF1("The capital is Oslo.", "Oslo"), 0.5);
  EXPECT_DOUBLE_EQ(TokenF1("oslo oslo", "oslo"), 2 * 0.5 * 1 / 1.5);  // multiset overlap
  EXPECT_EQ(TokenF1("", ""), 1.0);
  EXPECT_EQ(TokenF1("x", ""), 0.0);
  EXPECT_EQ(TokenF1("bergen", "oslo"), 0.0);
}

TEST(MetricsTest, ScoreByNameAndUnknownNames) {
  for (const std::string& name : AnswerMetricNames()) {
    absl::StatusOr<double> s = Score(name, "Oslo", "oslo");
    ASSERT_TRUE(s.ok()) << name;
    EXPECT_GE(*s, 0.0);
  }
  absl::StatusOr<double> bad = Score("bleu", "a", "b");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown metric 'bleu'; known: exact_match"));
}

}  // namespace
}  // namespace fjord::eval
