// Answer metrics for prompt/answer evaluation (the comparison tool): each
// scores one generated reply against one reference answer in [0, 1].
//
//   double f1 = eval::TokenF1("The capital is Oslo.", "Oslo");   // 0.5
//
// Normalisation (NormalizeAnswer) is SQuAD's: lower case, ASCII punctuation
// removed, the articles a/an/the dropped, whitespace collapsed. Non-ASCII
// bytes are kept as they are (no Unicode case folding). Plain C++; all
// functions are pure and thread-safe.
#ifndef FJORD_RUNTIME_EVAL_METRICS_H_
#define FJORD_RUNTIME_EVAL_METRICS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::eval {

std::string NormalizeAnswer(absl::string_view text);

// 1 when the reply equals the answer after trimming surrounding whitespace.
double ExactMatch(absl::string_view reply, absl::string_view answer);
// 1 when NormalizeAnswer(reply) == NormalizeAnswer(answer).
double NormalizedExactMatch(absl::string_view reply, absl::string_view answer);
// 1 when the normalised answer occurs in the normalised reply (an empty
// answer never does).
double Contains(absl::string_view reply, absl::string_view answer);
// SQuAD's F1 over the normalised words: 2·P·R / (P + R) of their multiset
// overlap; 1 when both are empty, 0 when one is.
double TokenF1(absl::string_view reply, absl::string_view answer);

// The metric names the tool and the report use, in order:
// "exact_match", "normalized_exact_match", "contains", "token_f1".
const std::vector<std::string>& AnswerMetricNames();
// Scores by name; InvalidArgument naming the metric and the known ones.
absl::StatusOr<double> Score(absl::string_view metric, absl::string_view reply,
                             absl::string_view answer);

}  // namespace fjord::eval

#endif  // FJORD_RUNTIME_EVAL_METRICS_H_
