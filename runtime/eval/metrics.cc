#include "runtime/eval/metrics.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace fjord::eval {
namespace {

std::vector<std::string> Words(absl::string_view text) {
  return absl::StrSplit(text, ' ', absl::SkipEmpty());
}

}  // namespace

std::string NormalizeAnswer(absl::string_view text) {
  std::string lower;
  lower.reserve(text.size());
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x80 && absl::ascii_ispunct(c)) continue;  // SQuAD drops string.punctuation
    lower.push_back(c < 0x80 ? absl::ascii_tolower(c) : ch);
  }
  std::vector<std::string> kept;
  for (absl::string_view w :
       absl::StrSplit(lower, absl::ByAnyChar(" \t\n\r\f\v"), absl::SkipEmpty())) {
    if (w == "a" || w == "an" || w == "the") continue;
    kept.emplace_back(w);
  }
  return absl::StrJoin(kept, " ");
}

double ExactMatch(absl::string_view reply, absl::string_view answer) {
  return absl::StripAsciiWhitespace(reply) == absl::StripAsciiWhitespace(answer) ? 1.0 : 0.0;
}

double NormalizedExactMatch(absl::string_view reply, absl::string_view answer) {
  return NormalizeAnswer(reply) == NormalizeAnswer(answer) ? 1.0 : 0.0;
}

double Contains(absl::string_view reply, absl::string_view answer) {
  const std::string a = NormalizeAnswer(answer);
  if (a.empty()) return 0.0;
  return absl::StrCat(" ", NormalizeAnswer(reply), " ").find(absl::StrCat(" ", a, " ")) !=
                 std::string::npos
             ? 1.0
             : 0.0;
}

double TokenF1(absl::string_view reply, absl::string_view answer) {
  const std::vector<std::string> r = Words(NormalizeAnswer(reply));
  const std::vector<std::string> a = Words(NormalizeAnswer(answer));
  if (r.empty() || a.empty()) return r.empty() && a.empty() ? 1.0 : 0.0;
  std::map<std::string, int> counts;
  for (const std::string& w : a) ++counts[w];
  int common = 0;
  for (const std::string& w : r) {
    auto it = counts.find(w);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return 0.0;
  const double precision = static_cast<double>(common) / static_cast<double>(r.size());
  const double recall = static_cast<double>(common) / static_cast<double>(a.size());
  return 2 * precision * recall / (precision + recall);
}

const std::vector<std::string>& AnswerMetricNames() {
  static const auto* names =
      new std::vector<std::string>{"exact_match", "normalized_exact_match", "contains", "token_f1"};
  return *names;
}

absl::StatusOr<double> Score(absl::string_view metric, absl::string_view reply,
                             absl::string_view answer) {
  if (metric == "exact_match") return ExactMatch(reply, answer);
  if (metric == "normalized_exact_match") return NormalizedExactMatch(reply, answer);
  if (metric == "contains") return Contains(reply, answer);
  if (metric == "token_f1") return TokenF1(reply, answer);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown metric '", metric, "'; known: ", absl::StrJoin(AnswerMetricNames(), ", ")));
}

}  // namespace fjord::eval
