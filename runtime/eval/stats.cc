#include "runtime/eval/stats.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace fjord::eval {

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kBetter:
      return "better";
    case Verdict::kWorse:
      return "worse";
    case Verdict::kTie:
      return "tie";
  }
  return "tie";
}

absl::StatusOr<PairedDifference> PairedBootstrap(const std::vector<double>& a,
                                                 const std::vector<double>& b,
                                                 const BootstrapOptions& options) {
  if (a.size() != b.size()) {
    return absl::InvalidArgumentError(absl::StrCat("paired bootstrap: ", a.size(), " and ",
                                                   b.size(), " scores; a pair needs equal counts"));
  }
  if (a.empty()) return absl::InvalidArgumentError("paired bootstrap: no examples");
  if (options.iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("paired bootstrap: iterations must be >= 1, got ", options.iterations));
  }
  if (!(options.confidence > 0.0 && options.confidence < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("paired bootstrap: confidence must be in (0, 1), got ", options.confidence));
  }
  const size_t n = a.size();
  std::vector<double> diff(n);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("paired bootstrap: example ", i, " has a score that is not finite"));
    }
    diff[i] = a[i] - b[i];
    sum += diff[i];
  }
  PairedDifference out;
  out.n = static_cast<int64_t>(n);
  out.mean = sum / static_cast<double>(n);
  std::mt19937_64 gen(options.seed);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  std::vector<double> means(static_cast<size_t>(options.iterations));
  for (double& m : means) {
    double s = 0.0;
    for (size_t k = 0; k < n; ++k) s += diff[pick(gen)];
    m = s / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  // Percentiles by the nearest rank below / above.
  const double tail = (1.0 - options.confidence) / 2.0;
  const double last = static_cast<double>(means.size() - 1);
  out.low = means[static_cast<size_t>(std::floor(tail * last))];
  out.high = means[static_cast<size_t>(std::ceil((1.0 - tail) * last))];
  const bool a_ahead = options.higher_is_better ? out.low > 0.0 : out.high < 0.0;
  const bool b_ahead = options.higher_is_better ? out.high < 0.0 : out.low > 0.0;
  out.verdict = a_ahead ? Verdict::kBetter : b_ahead ? Verdict::kWorse : Verdict::kTie;
  return out;
}

std::vector<int> RankWithTies(const std::vector<std::vector<bool>>& better) {
  const size_t k = better.size();
  std::vector<int> rank(k, 1);
  for (size_t i = 0; i < k; ++i) {
    for (size_t j = 0; j < k; ++j) {
      if (j != i && j < better.size() && i < better[j].size() && better[j][i]) ++rank[i];
    }
  }
  return rank;
}

}  // namespace fjord::eval
