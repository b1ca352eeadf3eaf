#include "runtime/eval/judge.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fjord::eval {

std::string JudgePrompt(absl::string_view question, absl::string_view reply_1,
                        absl::string_view reply_2, absl::string_view reference) {
  std::string out = absl::StrCat(kJudgeInstruction, "\n\nQuestion:\n", question, "\n\n");
  if (!reference.empty()) absl::StrAppend(&out, "Reference answer:\n", reference, "\n\n");
  absl::StrAppend(&out, "Reply 1:\n", reply_1, "\n\nReply 2:\n", reply_2, "\n\n", kJudgeQuestion);
  return out;
}

std::optional<int> ParseJudgeReply(absl::string_view reply) {
  auto is_space = [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); };
  auto skip = [&](absl::string_view s, absl::string_view also) {
    size_t i = 0;
    while (i < s.size() && (is_space(s[i]) || also.find(s[i]) != absl::string_view::npos)) ++i;
    return s.substr(i);
  };
  absl::string_view s = skip(reply, "");                                   // 1
  if (absl::StartsWithIgnoreCase(s, "reply")) s = skip(s.substr(5), ":");  // 2
  size_t end = 0;                                                          // 3
  while (end < s.size() && !is_space(s[end])) ++end;
  absl::string_view token = s.substr(0, end);
  constexpr absl::string_view kOpen = "([{*\"'#", kClose = ")]}*\"'.,:;!";  // 4
  while (!token.empty() && kOpen.find(token.front()) != absl::string_view::npos) {
    token.remove_prefix(1);
  }
  while (!token.empty() && kClose.find(token.back()) != absl::string_view::npos) {
    token.remove_suffix(1);
  }
  if (token == "1") return 1;  // 5
  if (token == "2") return 2;
  return std::nullopt;
}

absl::StatusOr<PairJudgement> JudgePair(const std::vector<std::string>& questions,
                                        const std::vector<std::string>& references,
                                        const std::vector<std::string>& replies_a,
                                        const std::vector<std::string>& replies_b,
                                        const JudgeFn& judge, const BootstrapOptions& options) {
  const size_t n = questions.size();
  if (n == 0) return absl::InvalidArgumentError("judge pair: no examples");
  if (replies_a.size() != n || replies_b.size() != n ||
      (!references.empty() && references.size() != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("judge pair: ", n, " questions, ", references.size(), " references, ",
                     replies_a.size(), " replies from A and ", replies_b.size(),
                     " from B; each needs one per question (references may be empty)"));
  }
  if (absl::Status s = ValidateBootstrapOptions(options); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("judge pair: ", s.message()));
  }

  // Two prompts per example whose replies differ: A shown first, B first.
  std::vector<size_t> judged;
  std::vector<std::string> prompts;
  for (size_t i = 0; i < n; ++i) {
    if (replies_a[i] == replies_b[i]) continue;
    const absl::string_view reference =
        references.empty() ? absl::string_view() : absl::string_view(references[i]);
    judged.push_back(i);
    prompts.push_back(JudgePrompt(questions[i], replies_a[i], replies_b[i], reference));
    prompts.push_back(JudgePrompt(questions[i], replies_b[i], replies_a[i], reference));
  }
  std::vector<std::string> replies;
  if (!prompts.empty()) {
    absl::StatusOr<std::vector<std::string>> r = judge(prompts);
    if (!r.ok())
      return absl::Status(r.status().code(), absl::StrCat("judge: ", r.status().message()));
    if (r->size() != prompts.size()) {
      return absl::InternalError(absl::StrCat("judge pair: the judge returned ", r->size(),
                                              " replies for ", prompts.size(), " prompts"));
    }
    replies = *std::move(r);
  }

  PairJudgement out;
  out.examples = static_cast<int64_t>(n);
  out.identical = static_cast<int64_t>(n - judged.size());
  std::vector<double> scores(n, 0.5);  // identical replies: a tie
  int64_t agreed = 0;
  for (size_t k = 0; k < judged.size(); ++k) {
    const std::optional<int> first = ParseJudgeReply(replies[2 * k]);       // A is Reply 1
    const std::optional<int> second = ParseJudgeReply(replies[2 * k + 1]);  // B is Reply 1
    out.unparseable += !first.has_value();
    out.unparseable += !second.has_value();
    if (!first.has_value() || !second.has_value()) continue;
    const bool first_names_a = *first == 1;
    const bool second_names_a = *second == 2;
    if (first_names_a != second_names_a) continue;  // the orders disagree
    ++agreed;
    scores[judged[k]] = first_names_a ? 1.0 : 0.0;
  }
  for (double s : scores) {
    if (s == 1.0) ++out.wins_a;
    if (s == 0.0) ++out.wins_b;
  }
  out.ties = out.examples - out.wins_a - out.wins_b;
  out.agreement =
      judged.empty() ? 0.0 : static_cast<double>(agreed) / static_cast<double>(judged.size());
  absl::StatusOr<MeanInterval> win_rate = MeanBootstrap(scores, options);
  if (!win_rate.ok()) return win_rate.status();
  out.win_rate_a = *win_rate;
  out.verdict = out.win_rate_a.low > 0.5    ? Verdict::kBetter
                : out.win_rate_a.high < 0.5 ? Verdict::kWorse
                                            : Verdict::kTie;
  return out;
}

}  // namespace fjord::eval
