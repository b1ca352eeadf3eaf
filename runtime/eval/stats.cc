#include "runtime/eval/stats.h"

#include <algorithm>
#include <cmath>

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

absl::Status ValidateBootstrapOptions(const BootstrapOptions& options) {
  if (options.iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bootstrap: iterations must be >= 1, got ", options.iterations));
  }
  if (!(options.confidence > 0.0 && options.confidence < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bootstrap: confidence must be in (0, 1), got ", options.confidence));
  }
  return absl::OkStatus();
}

uint64_t SplitMix64::Next() {
  state_ += 0x9E3779B97F4A7C15ULL;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::UniformIndex(uint64_t n) {
  unsigned __int128 m = static_cast<unsigned __int128>(Next()) * n;
  uint64_t l = static_cast<uint64_t>(m);
  if (l < n) {
    const uint64_t t = (0 - n) % n;  // (2^64 - n) mod n
    while (l < t) {
      m = static_cast<unsigned __int128>(Next()) * n;
      l = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

namespace {

// Step 5 of stats.h: numpy's default (linear) percentile of sorted values at
// quantile q in [0, 1].
double LinearPercentile(const std::vector<double>& sorted, double q) {
  const size_t last = sorted.size() - 1;
  const double h = static_cast<double>(last) * q;
  const double j = std::floor(h);
  const double g = h - j;
  const size_t lo_index = std::min(static_cast<size_t>(j), last);
  const double lo = sorted[lo_index];
  const double hi = sorted[std::min(lo_index + 1, last)];
  const double diff = hi - lo;
  return g >= 0.5 ? hi - diff * (1.0 - g) : lo + diff * g;
}

// Steps 3-5 of stats.h on validated input: the mean of d and the interval.
MeanInterval Bootstrap(const std::vector<double>& d, const BootstrapOptions& options) {
  const size_t n = d.size();
  MeanInterval out;
  out.n = static_cast<int64_t>(n);
  double sum = 0.0;
  for (double v : d) sum += v;
  out.mean = sum / static_cast<double>(n);
  SplitMix64 gen(options.seed);
  std::vector<double> means(static_cast<size_t>(options.iterations));
  for (double& m : means) {
    double s = 0.0;
    for (size_t k = 0; k < n; ++k) s += d[gen.UniformIndex(n)];
    m = s / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  const double c = options.confidence;
  out.low = LinearPercentile(means, (1.0 - c) / 2.0);
  out.high = LinearPercentile(means, (1.0 + c) / 2.0);
  return out;
}

}  // namespace

absl::StatusOr<PairedDifference> PairedBootstrap(const std::vector<double>& a,
                                                 const std::vector<double>& b,
                                                 const BootstrapOptions& options) {
  if (a.size() != b.size()) {
    return absl::InvalidArgumentError(absl::StrCat("paired bootstrap: ", a.size(), " and ",
                                                   b.size(), " scores; a pair needs equal counts"));
  }
  if (a.empty()) return absl::InvalidArgumentError("paired bootstrap: no examples");
  if (absl::Status s = ValidateBootstrapOptions(options); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("paired ", s.message()));
  }
  const size_t n = a.size();
  std::vector<double> diff(n);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("paired bootstrap: example ", i, " has a score that is not finite"));
    }
    diff[i] = a[i] - b[i];
  }
  const MeanInterval m = Bootstrap(diff, options);
  PairedDifference out;
  out.n = m.n;
  out.mean = m.mean;
  out.low = m.low;
  out.high = m.high;
  const bool a_ahead = options.higher_is_better ? out.low > 0.0 : out.high < 0.0;
  const bool b_ahead = options.higher_is_better ? out.high < 0.0 : out.low > 0.0;
  out.verdict = a_ahead ? Verdict::kBetter : b_ahead ? Verdict::kWorse : Verdict::kTie;
  return out;
}

absl::StatusOr<MeanInterval> MeanBootstrap(const std::vector<double>& x,
                                           const BootstrapOptions& options) {
  if (x.empty()) return absl::InvalidArgumentError("mean bootstrap: no examples");
  if (absl::Status s = ValidateBootstrapOptions(options); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("mean ", s.message()));
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("mean bootstrap: example ", i, " has a score that is not finite"));
    }
  }
  return Bootstrap(x, options);
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
