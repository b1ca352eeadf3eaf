// A pairwise judge: a model (the judge) is shown a question and two
// candidates' replies and says which answers better. Every example is judged
// in both orders (A shown first, then B shown first) to cancel the judge's
// position bias; A wins an example only when both orders prefer A.
//
//   eval::JudgeFn judge = [&](const std::vector<std::string>& prompts) {
//     return GenerateReplies(judge_model, prompts);  // the caller's generator
//   };
//   FJORD_ASSIGN_OR_RETURN(eval::PairJudgement j,
//                          eval::JudgePair(questions, answers, replies_a,
//                                          replies_b, judge, {.seed = 7}));
//   // j.win_rate_a: A's win rate (ties count half) with its interval.
//
// Plain C++, pure logic: the caller renders each prompt with the judge's chat
// template (as the user message) and generates the replies.
#ifndef FJORD_RUNTIME_EVAL_JUDGE_H_
#define FJORD_RUNTIME_EVAL_JUDGE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/eval/stats.h"

namespace fjord::eval {

// The judge's instruction, the first paragraph of every prompt.
inline constexpr char kJudgeInstruction[] =
    "You are judging two replies to the same question. Decide which reply answers the "
    "question better: correct first, then complete and to the point. The order in which the "
    "replies are shown does not matter, and a longer reply is not better for being longer. "
    "If a reference answer is given, judge correctness against it.";

// The question the prompt ends with.
inline constexpr char kJudgeQuestion[] =
    "Which reply answers the question better? Answer with exactly one character: 1 if "
    "Reply 1 is better, 2 if Reply 2 is better.";

// The judge prompt, exactly (each block separated by one blank line, no
// trailing newline):
//
//   <kJudgeInstruction>
//
//   Question:
//   <question>
//
//   Reference answer:          (these two lines only when reference is not
//   <reference>                 empty, followed by the blank line)
//
//   Reply 1:
//   <reply_1>
//
//   Reply 2:
//   <reply_2>
//
//   <kJudgeQuestion>
std::string JudgePrompt(absl::string_view question, absl::string_view reply_1,
                        absl::string_view reply_2, absl::string_view reference = "");

// Reads the judge's reply: 1, 2, or nullopt when it names neither. Exactly:
//   1. skip leading whitespace (space, \t, \n, \r, \f, \v);
//   2. if the text then starts with "reply" (ASCII case-insensitive), drop
//      those five letters and any whitespace and ':' after them;
//   3. the token is the text up to the next whitespace or the end;
//   4. drop from the token's start any of ( [ { * " ' # and from its end
//      any of ) ] } * " ' . , : ; !
//   5. 1 when what is left is exactly "1", 2 when exactly "2", else nullopt.
// So "1", " 2\n", "Reply 1", "reply: 2", "[[1]]", "**2**", "1.", "(2)",
// "1 is better" parse; "12", "both", "1/2", "one", "", "Replying 1" do not.
std::optional<int> ParseJudgeReply(absl::string_view reply);

// The judge: a batch of prompts -> the judge's raw replies, one per prompt,
// in the same order. An error status is passed on by JudgePair.
using JudgeFn = std::function<absl::StatusOr<std::vector<std::string>>(
    const std::vector<std::string>& prompts)>;

struct PairJudgement {
  int64_t examples = 0;     // all examples
  int64_t wins_a = 0;       // both orders preferred A
  int64_t wins_b = 0;       // both orders preferred B
  int64_t ties = 0;         // the rest: wins_a + wins_b + ties == examples
  int64_t identical = 0;    // of the ties: A's and B's replies equal, not judged
  int64_t unparseable = 0;  // judge replies (two per judged example) that
                            // ParseJudgeReply could not read
  // Of the judged examples (examples - identical), the fraction where both
  // orders named the same candidate; 0 when none was judged.
  double agreement = 0.0;
  // A's score per example, 1 (A wins), 0 (B wins) or 0.5 (tie), averaged,
  // with its bootstrap interval (MeanBootstrap).
  MeanInterval win_rate_a;
  // kBetter when win_rate_a.low > 0.5, kWorse when win_rate_a.high < 0.5,
  // else kTie.
  Verdict verdict = Verdict::kTie;
};

// Judges candidates A and B on each example i: question[i], the optional
// reference answer references[i], A's reply replies_a[i], B's replies_b[i].
// references is either empty (no reference answers) or one per example; an
// empty references[i] leaves that prompt without one.
//
// The judge is called at most once, with 2 prompts per judged example in
// example order: JudgePrompt(q, a, b, ref) (A shown first), then
// JudgePrompt(q, b, a, ref) (B shown first). An example whose two replies
// are equal (byte for byte) is not sent to the judge and counts as a tie;
// when no example is judged the judge is not called.
//
// Per example, order 1 names A on "1" and B on "2"; order 2 names B on "1"
// and A on "2". A wins when both name A, B wins when both name B, else a tie
// (the orders disagree, or a reply did not parse).
//
// options: the bootstrap of the win rate (iterations, confidence, seed;
// higher_is_better is not used).
//
// Errors: InvalidArgument when there are no examples, the sizes differ
// (questions, replies_a, replies_b, and references unless empty) or the
// options are out of range — all checked before the judge is called;
// Internal when the judge returns a different number of replies than
// prompts; the judge's own error, its message prefixed with "judge: ".
absl::StatusOr<PairJudgement> JudgePair(const std::vector<std::string>& questions,
                                        const std::vector<std::string>& references,
                                        const std::vector<std::string>& replies_a,
                                        const std::vector<std::string>& replies_b,
                                        const JudgeFn& judge, const BootstrapOptions& options);

}  // namespace fjord::eval

#endif  // FJORD_RUNTIME_EVAL_JUDGE_H_
