// Paired statistics for comparing candidates (base models, adapters) on the
// same examples: a bootstrap confidence interval of the mean difference, a
// verdict only where the interval excludes zero, and a ranking with ties.
//
//   FJORD_ASSIGN_OR_RETURN(eval::PairedDifference d,
//                          eval::PairedBootstrap(f1_a, f1_b, {.seed = 7}));
//   if (d.verdict == eval::Verdict::kBetter) ...   // A better than B
//
// Plain C++; pure functions. The bootstrap is fully specified below (the
// generator, the index draw, the order of the draws, the percentile rule),
// so the same data and options give the same interval on every platform and
// any language can reproduce it bit for bit (tests/interop/
// test_bootstrap_reference.py does, in Python).
//
// ## The bootstrap, exactly
//
// All integers are unsigned 64-bit with wrap-around (mod 2^64); all reals
// are IEEE-754 doubles with round-to-nearest-even and no fused multiply-add.
//
// 1. Generator: SplitMix64 with state = options.seed. Each draw:
//      state += 0x9E3779B97F4A7C15
//      z = state
//      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//      z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//      return z ^ (z >> 31)
// 2. An index in [0, n), n >= 1: Lemire's unbiased multiply-and-reject.
//      x = draw; m = x * n as a 128-bit product; l = m mod 2^64
//      if l < n:
//        t = (2^64 - n) mod n
//        while l < t: x = draw; m = x * n; l = m mod 2^64
//      return m >> 64                 (the high 64 bits)
//    (Lemire 2019, "Fast Random Integer Generation in an Interval".)
// 3. The values: d_i = a_i - b_i for PairedBootstrap, d_i = x_i for
//    MeanBootstrap (i = 0..n-1). The reported mean is
//    (((d_0 + d_1) + d_2) + ... + d_{n-1}) / n, summed from 0.0 in index
//    order, divided by n as a double.
// 4. Resamples: for b = 0..B-1 (B = options.iterations), for k = 0..n-1,
//    draw one index j_k (step 2; one generator shared by all resamples, in
//    this order); resampled mean M_b = (0.0 + d_{j_0} + ... + d_{j_{n-1}})
//    summed left to right, divided by n.
// 5. Interval: sort M_0..M_{B-1} ascending into S. For q_low = (1 - c) / 2
//    and q_high = (1 + c) / 2 (c = options.confidence, each computed as
//    written in doubles), the percentile at q is numpy's default
//    (`numpy.percentile(S, 100 * q, method="linear")`, numpy >= 1.22):
//      h = (B - 1) * q;  j = floor(h);  g = h - j
//      lo = S[j];  hi = S[min(j + 1, B - 1)];  diff = hi - lo
//      value = g >= 0.5 ? hi - diff * (1 - g) : lo + diff * g
//    low = value at q_low, high = value at q_high.
// 6. Verdict (PairedBootstrap only): higher_is_better: kBetter when
//    low > 0, kWorse when high < 0; lower is better: kBetter when high < 0,
//    kWorse when low > 0; else kTie.
#ifndef FJORD_RUNTIME_EVAL_STATS_H_
#define FJORD_RUNTIME_EVAL_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fjord::eval {

enum class Verdict {
  kBetter,  // A better than B: the whole interval favours A
  kWorse,   // A worse than B
  kTie,     // the interval contains zero: no verdict
};
const char* VerdictName(Verdict v);  // "better", "worse", "tie"

struct BootstrapOptions {
  int iterations = 2000;         // default 2000 resamples of the examples (B)
  double confidence = 0.95;      // default 95%: the 2.5th and 97.5th percentiles
  uint64_t seed = 0;             // default 0: SplitMix64's initial state
  bool higher_is_better = true;  // default true; false for losses and
                                 // perplexities (PairedBootstrap's verdict)
};

// OK, or InvalidArgument naming the field when iterations < 1 or confidence
// is not in (0, 1).
absl::Status ValidateBootstrapOptions(const BootstrapOptions& options);

// SplitMix64 and the index draw, steps 1 and 2 above. Not thread-safe (one
// generator per thread).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();                    // step 1
  uint64_t UniformIndex(uint64_t n);  // step 2: in [0, n); n must be >= 1

 private:
  uint64_t state_;
};

struct PairedDifference {
  int64_t n = 0;      // examples
  double mean = 0.0;  // mean over examples of a_i - b_i (step 3)
  double low = 0.0;   // percentile interval of the resampled means (step 5)
  double high = 0.0;
  Verdict verdict = Verdict::kTie;  // step 6
};

// a[i] and b[i] are two candidates' scores on example i. InvalidArgument
// when the sizes differ, there are no examples, a score is not finite, or
// the options are out of range (ValidateBootstrapOptions).
absl::StatusOr<PairedDifference> PairedBootstrap(const std::vector<double>& a,
                                                 const std::vector<double>& b,
                                                 const BootstrapOptions& options);

struct MeanInterval {
  int64_t n = 0;      // examples
  double mean = 0.0;  // mean of x (step 3)
  double low = 0.0;   // percentile interval of the resampled means (step 5)
  double high = 0.0;
};

// The bootstrap interval of one candidate's mean score: steps 1-5 with
// d_i = x[i] (options.higher_is_better is not used). InvalidArgument when x
// is empty, a score is not finite, or the options are out of range.
absl::StatusOr<MeanInterval> MeanBootstrap(const std::vector<double>& x,
                                           const BootstrapOptions& options);

// Ranks (1 = best) for candidates given which pairs differ significantly:
// better[i][j] is true when candidate i is significantly better than j.
// rank_i = 1 + the number of candidates significantly better than i, so
// candidates that nothing separates share a rank.
std::vector<int> RankWithTies(const std::vector<std::vector<bool>>& better);

}  // namespace fjord::eval

#endif  // FJORD_RUNTIME_EVAL_STATS_H_
