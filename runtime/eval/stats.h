// Paired statistics for comparing candidates (base models, adapters) on the
// same examples: a bootstrap confidence interval of the mean difference, a
// verdict only where the interval excludes zero, and a ranking with ties.
//
//   FJORD_ASSIGN_OR_RETURN(eval::PairedDifference d,
//                          eval::PairedBootstrap(f1_a, f1_b, {.seed = 7}));
//   if (d.verdict == eval::Verdict::kBetter) ...   // A better than B
//
// Plain C++; pure functions (the resampling draws from a generator seeded
// by the options, so a seed gives the same interval every time).
#ifndef FJORD_RUNTIME_EVAL_STATS_H_
#define FJORD_RUNTIME_EVAL_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fjord::eval {

enum class Verdict {
  kBetter,  // A better than B: the whole interval favours A
  kWorse,   // A worse than B
  kTie,     // the interval contains zero: no verdict
};
const char* VerdictName(Verdict v);  // "better", "worse", "tie"

struct BootstrapOptions {
  int iterations = 2000;     // default 2000 resamples of the examples
  double confidence = 0.95;  // default 95%: the 2.5th and 97.5th percentiles
  uint64_t seed = 0;
  bool higher_is_better = true;  // false for losses and perplexities
};

struct PairedDifference {
  int64_t n = 0;      // examples
  double mean = 0.0;  // mean over examples of a_i - b_i
  double low = 0.0;   // percentile interval of the resampled means
  double high = 0.0;
  Verdict verdict = Verdict::kTie;
};

// a[i] and b[i] are two candidates' scores on example i. InvalidArgument
// when the sizes differ, there are no examples, a score is not finite, or
// the options are out of range (iterations < 1, confidence not in (0, 1)).
absl::StatusOr<PairedDifference> PairedBootstrap(const std::vector<double>& a,
                                                 const std::vector<double>& b,
                                                 const BootstrapOptions& options);

// Ranks (1 = best) for candidates given which pairs differ significantly:
// better[i][j] is true when candidate i is significantly better than j.
// rank_i = 1 + the number of candidates significantly better than i, so
// candidates that nothing separates share a rank.
std::vector<int> RankWithTies(const std::vector<std::vector<bool>>& better);

}  // namespace fjord::eval

#endif  // FJORD_RUNTIME_EVAL_STATS_H_
