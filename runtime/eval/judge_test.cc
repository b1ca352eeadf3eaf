#include "runtime/eval/judge.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/status_matchers.h"

namespace fjord::eval {
namespace {

using ::fjord::status_testing::StatusIs;
using ::testing::HasSubstr;

// The reply shown as "Reply k" in a prompt built by JudgePrompt.
std::string ShownReply(const std::string& prompt, int k) {
  const std::string open = absl::StrCat("Reply ", k, ":\n");
  const size_t begin = prompt.find(open) + open.size();
  const size_t end = prompt.find("\n\n", begin);
  return prompt.substr(begin, end - begin);
}

// A fake judge that prefers the longer reply, whichever order it is shown
// in (ties in length go to Reply 1). Counts its calls and prompts.
struct LongerReplyJudge {
  int calls = 0;
  std::vector<std::string> seen;
  JudgeFn Fn() {
    return [this](const std::vector<std::string>& prompts) {
      ++calls;
      seen.insert(seen.end(), prompts.begin(), prompts.end());
      std::vector<std::string> out;
      for (const std::string& p : prompts) {
        out.push_back(ShownReply(p, 2).size() > ShownReply(p, 1).size() ? "2" : "1");
      }
      return absl::StatusOr<std::vector<std::string>>(out);
    };
  }
};

JudgeFn Constant(std::string reply) {
  return [reply](const std::vector<std::string>& prompts) {
    return absl::StatusOr<std::vector<std::string>>(
        std::vector<std::string>(prompts.size(), reply));
  };
}

struct Data {
  std::vector<std::string> questions, references, a, b;
};

// n examples where A's reply is longer than B's on the first `a_longer`.
Data Examples(int n, int a_longer) {
  Data d;
  for (int i = 0; i < n; ++i) {
    d.questions.push_back(absl::StrCat("question ", i));
    d.references.push_back(absl::StrCat("answer ", i));
    d.a.push_back(i < a_longer ? absl::StrCat("a long reply ", i) : absl::StrCat("a", i));
    d.b.push_back(i < a_longer ? absl::StrCat("b", i) : absl::StrCat("b long reply ", i));
  }
  return d;
}

TEST(JudgePromptTest, TheStatedLayout) {
  EXPECT_EQ(
      JudgePrompt("Q?", "first", "second"),
      absl::StrCat(kJudgeInstruction,
                   "\n\nQuestion:\nQ?\n\nReply 1:\nfirst\n\nReply 2:\nsecond\n\n", kJudgeQuestion));
  EXPECT_EQ(JudgePrompt("Q?", "first", "second", "ref"),
            absl::StrCat(kJudgeInstruction,
                         "\n\nQuestion:\nQ?\n\nReference answer:\nref\n\nReply 1:\nfirst\n\n"
                         "Reply 2:\nsecond\n\n",
                         kJudgeQuestion));
  EXPECT_THAT(kJudgeQuestion, HasSubstr("exactly one character"));
}

TEST(ParseJudgeReplyTest, AcceptsOneOrTwoAndNothingElse) {
  for (const char* r : {"1", " 1", "\n1\n", "Reply 1", "reply: 1", "REPLY1", "[[1]]", "**1**", "1.",
                        "(1)", "1 is better", "#1", "'1'"}) {
    EXPECT_EQ(ParseJudgeReply(r), 1) << r;
  }
  for (const char* r : {"2", "Reply 2", "[[2]]", "2.\nBecause..."}) {
    EXPECT_EQ(ParseJudgeReply(r), 2) << r;
  }
  for (const char* r : {"", "   ", "12", "21", "both", "1/2", "one", "Replying 1", "1st", "0", "3",
                        "[[3]]", "Reply", "neither 1"}) {
    EXPECT_EQ(ParseJudgeReply(r), std::nullopt) << r;
  }
}

TEST(JudgePairTest, AConsistentJudgeCountsWinsAndSeparatesClearly) {
  Data d = Examples(30, 30);  // A's reply is longer on every example
  LongerReplyJudge judge;
  absl::StatusOr<PairJudgement> j = JudgePair(d.questions, d.references, d.a, d.b, judge.Fn(), {});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->examples, 30);
  EXPECT_EQ(j->wins_a, 30);
  EXPECT_EQ(j->wins_b, 0);
  EXPECT_EQ(j->ties, 0);
  EXPECT_EQ(j->unparseable, 0);
  EXPECT_EQ(j->agreement, 1.0);
  EXPECT_EQ(j->win_rate_a.n, 30);
  EXPECT_EQ(j->win_rate_a.mean, 1.0);
  EXPECT_EQ(j->verdict, Verdict::kBetter);
  EXPECT_EQ(judge.calls, 1);
  EXPECT_EQ(judge.seen.size(), 60u);

  // The other way round: B longer on 28 of 30.
  d = Examples(30, 2);
  j = JudgePair(d.questions, d.references, d.a, d.b, judge.Fn(), {.seed = 4});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->wins_a, 2);
  EXPECT_EQ(j->wins_b, 28);
  EXPECT_EQ(j->agreement, 1.0);
  EXPECT_NEAR(j->win_rate_a.mean, 2.0 / 30, 1e-15);
  EXPECT_LT(j->win_rate_a.high, 0.5);
  EXPECT_EQ(j->verdict, Verdict::kWorse);

  // Evenly split: no verdict.
  d = Examples(30, 15);
  j = JudgePair(d.questions, d.references, d.a, d.b, judge.Fn(), {.seed = 4});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->wins_a, 15);
  EXPECT_EQ(j->wins_b, 15);
  EXPECT_EQ(j->win_rate_a.mean, 0.5);
  EXPECT_EQ(j->verdict, Verdict::kTie);
}

TEST(JudgePairTest, PromptsShowBothOrders) {
  Data d = Examples(3, 1);
  LongerReplyJudge judge;
  ASSERT_TRUE(JudgePair(d.questions, d.references, d.a, d.b, judge.Fn(), {}).ok());
  ASSERT_EQ(judge.seen.size(), 6u);
  for (size_t i = 0; i < 3; ++i) {
    const std::string& a_first = judge.seen[2 * i];
    const std::string& b_first = judge.seen[2 * i + 1];
    EXPECT_EQ(a_first, JudgePrompt(d.questions[i], d.a[i], d.b[i], d.references[i]));
    EXPECT_EQ(b_first, JudgePrompt(d.questions[i], d.b[i], d.a[i], d.references[i]));
    EXPECT_EQ(ShownReply(a_first, 1), d.a[i]);
    EXPECT_EQ(ShownReply(a_first, 2), d.b[i]);
    EXPECT_EQ(ShownReply(b_first, 1), d.b[i]);
    EXPECT_EQ(ShownReply(b_first, 2), d.a[i]);
    EXPECT_THAT(a_first, HasSubstr(absl::StrCat("Reference answer:\n", d.references[i])));
  }
  // Without references: no reference block.
  judge.seen.clear();
  ASSERT_TRUE(JudgePair(d.questions, {}, d.a, d.b, judge.Fn(), {}).ok());
  for (const std::string& p : judge.seen) EXPECT_FALSE(absl::StrContains(p, "Reference answer"));
}

TEST(JudgePairTest, APositionBiasedJudgeGivesOnlyTies) {
  Data d = Examples(20, 10);
  absl::StatusOr<PairJudgement> j =
      JudgePair(d.questions, d.references, d.a, d.b, Constant("1"), {});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->wins_a, 0);
  EXPECT_EQ(j->wins_b, 0);
  EXPECT_EQ(j->ties, 20);
  EXPECT_EQ(j->unparseable, 0);
  EXPECT_EQ(j->agreement, 0.0);
  EXPECT_EQ(j->win_rate_a.mean, 0.5);
  EXPECT_EQ(j->win_rate_a.low, 0.5);
  EXPECT_EQ(j->win_rate_a.high, 0.5);
  EXPECT_EQ(j->verdict, Verdict::kTie);
}

TEST(JudgePairTest, UnparseableRepliesAreTiesAndCounted) {
  Data d = Examples(5, 5);
  absl::StatusOr<PairJudgement> j =
      JudgePair(d.questions, d.references, d.a, d.b, Constant("both are fine"), {});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->ties, 5);
  EXPECT_EQ(j->unparseable, 10);
  EXPECT_EQ(j->agreement, 0.0);
  EXPECT_EQ(j->verdict, Verdict::kTie);

  // One order unparseable, the other fine: a tie, one unparseable reply.
  JudgeFn half = [](const std::vector<std::string>& prompts) {
    std::vector<std::string> out;
    for (size_t i = 0; i < prompts.size(); ++i) out.push_back(i % 2 == 0 ? "1" : "12");
    return absl::StatusOr<std::vector<std::string>>(out);
  };
  j = JudgePair(d.questions, d.references, d.a, d.b, half, {});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->ties, 5);
  EXPECT_EQ(j->unparseable, 5);
}

TEST(JudgePairTest, IdenticalRepliesAreTiesWithoutAsking) {
  Data d = Examples(4, 4);
  d.b[1] = d.a[1];
  d.b[3] = d.a[3];
  LongerReplyJudge judge;
  absl::StatusOr<PairJudgement> j = JudgePair(d.questions, d.references, d.a, d.b, judge.Fn(), {});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(judge.calls, 1);
  ASSERT_EQ(judge.seen.size(), 4u);  // examples 0 and 2 only
  EXPECT_EQ(ShownReply(judge.seen[0], 1), d.a[0]);
  EXPECT_EQ(ShownReply(judge.seen[2], 1), d.a[2]);
  EXPECT_EQ(j->wins_a, 2);
  EXPECT_EQ(j->ties, 2);
  EXPECT_EQ(j->identical, 2);
  EXPECT_EQ(j->agreement, 1.0);  // of the judged examples
  EXPECT_EQ(j->win_rate_a.mean, 0.75);

  // All identical: the judge is never called.
  judge.calls = 0;
  j = JudgePair(d.questions, {}, d.a, d.a, judge.Fn(), {});
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(judge.calls, 0);
  EXPECT_EQ(j->ties, 4);
  EXPECT_EQ(j->identical, 4);
  EXPECT_EQ(j->agreement, 0.0);
  EXPECT_EQ(j->verdict, Verdict::kTie);
}

TEST(JudgePairTest, BadInputsAreRefusedBeforeTheJudgeIsCalled) {
  Data d = Examples(3, 1);
  LongerReplyJudge judge;
  EXPECT_THAT(JudgePair({}, {}, {}, {}, judge.Fn(), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no examples")));
  EXPECT_THAT(JudgePair(d.questions, d.references, d.a, {"x"}, judge.Fn(), {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("3 questions, 3 references, 3 replies from A and 1 from B")));
  EXPECT_THAT(JudgePair(d.questions, {"r"}, d.a, d.b, judge.Fn(), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 references")));
  EXPECT_THAT(JudgePair(d.questions, d.references, {"x", "y"}, d.b, judge.Fn(), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 replies from A")));
  EXPECT_THAT(JudgePair(d.questions, {}, d.a, d.b, judge.Fn(), {.iterations = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("iterations")));
  EXPECT_EQ(judge.calls, 0);

  JudgeFn short_judge = [](const std::vector<std::string>& prompts) {
    return absl::StatusOr<std::vector<std::string>>(
        std::vector<std::string>(prompts.size() - 1, "1"));
  };
  EXPECT_THAT(JudgePair(d.questions, {}, d.a, d.b, short_judge, {}),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("the judge returned 5 replies for 6 prompts")));
  JudgeFn failing = [](const std::vector<std::string>&) {
    return absl::StatusOr<std::vector<std::string>>(absl::UnavailableError("out of memory"));
  };
  EXPECT_THAT(JudgePair(d.questions, {}, d.a, d.b, failing, {}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("judge: out of memory")));
}

}  // namespace
}  // namespace fjord::eval
