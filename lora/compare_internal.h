// What lora/compare.cc's passes hand to the report (compare_report.cc).
// Internal to lora/compare.
#ifndef FJORD_LORA_COMPARE_INTERNAL_H_
#define FJORD_LORA_COMPARE_INTERNAL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "lora/eval_config.h"
#include "runtime/data/example.h"
#include "runtime/data/heldout.h"
#include "runtime/model/generation.h"

namespace fjord::lora::internal {

using nlohmann::ordered_json;

// loss, perplexity and token_accuracy need no replies; the others do.
inline bool IsReplyMetric(const std::string& m) {
  return m != "loss" && m != "perplexity" && m != "token_accuracy";
}

// One candidate's scores on one dataset: one per example for each metric,
// plus totals.
struct Scores {
  std::map<std::string, std::vector<double>> per_example;  // metric -> scores
  std::vector<std::string> replies;
  double answer_tokens = 0;
  double loss_s = 0, gen_s = 0, new_tokens = 0;
  model::GenerationStats generation;
  int64_t peak_rss = 0;
  int64_t peak_gpu = -1;  // on CUDA: the caching allocator's peak during this pass
  double energy_j = -1;   // on CUDA with NVML: the GPU's energy during this pass
};

// A dataset, read and tokenized once for every candidate: prompt/answer
// questions (every metric), or training data — chat messages, prompt and
// completion, text — whose trained tokens (the assistant turns' for chat)
// are scored by loss, perplexity and token accuracy.
struct Prepared {
  std::string name;
  bool answers = true;  // prompt/answer lines
  std::vector<data::HeldoutQuestion> questions;
  std::vector<std::vector<int32_t>> prompts;  // questions only
  std::vector<data::Example> examples;        // teacher-forced: every dataset
  size_t size() const { return examples.size(); }
};

inline double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

// The report of one dataset (docs/comparison.md, "fjord.compare/1"):
// metrics with intervals, pairs (losses only within a tokenizer group),
// ranks, samples, and the judge's pairs when `judge` is not null.
absl::StatusOr<ordered_json> DatasetReport(
    const EvaluationConfig& c, const Prepared& d, const std::vector<std::string>& all_metrics,
    const std::vector<std::string>& names, const std::vector<std::string>& adapters,
    const std::vector<std::string>& models, const std::vector<int>& group,
    const std::vector<Scores>& scores, bool replies, const ordered_json& judge);

}  // namespace fjord::lora::internal

#endif  // FJORD_LORA_COMPARE_INTERNAL_H_
