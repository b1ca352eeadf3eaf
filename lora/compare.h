// Comparing a base model and LoRA adapters side by side (issue 19's
// comparison tool): what `fjord-compare` runs locally and an evaluation job
// of fjordd runs in its worker (`fjord-train --config job.yaml` with an
// `evaluation:` job file). docs/comparison.md describes what is measured and
// the report; runtime/eval has the scoring, the statistics and the judge.
//
//   lora::EvaluationConfig c;
//   c.model = "models/llama";
//   c.candidates = {{"base", ""}, {"ft", "out/adapter"}};
//   c.datasets = {{"heldout", "data/heldout.jsonl"}};
//   FJORD_ASSIGN_OR_RETURN(std::vector<nlohmann::ordered_json> reports,
//                          lora::RunEvaluation(c, {}));
//
// The base is read once; each adapter is injected, run on every dataset and
// taken off again. For every candidate and example: the answer's loss given
// the prompt (teacher forcing; mean per token, perplexity over all answer
// tokens, token accuracy) and a greedy reply scored against the answer
// (exact match, normalised exact match, contains, token F1). Per dataset:
// each candidate's mean with a bootstrap interval, every pair's mean
// difference with a paired bootstrap interval and a verdict only where it
// excludes zero, ranks with ties, samples side by side, and, with a judge
// model, every pair's replies judged in both orders.
#ifndef FJORD_LORA_COMPARE_H_
#define FJORD_LORA_COMPARE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lora/eval_config.h"

namespace fjord::lora {

// Everything that can be checked before a model runs: the config's values,
// every dataset line by line (file, line and field of each error), the base's
// and the judge's config.json and tokenizer, the chat template, and each
// adapter's adapter_config.json. The JSON: {"valid": bool, "datasets":
// [{"name", "lines", "questions", "errors": [...]} ...], "error": "..." when
// something else is wrong}.
nlohmann::json ValidateEvaluation(const EvaluationConfig& config);

struct EvaluationProgress {
  int64_t done = 0;   // passes done: (candidate, dataset) pairs, then judged pairs
  int64_t total = 0;  // all of them
  std::string message;
};

struct EvaluationOptions {
  std::function<void(const EvaluationProgress&)> on_progress;  // may be empty
  // Checked between batches: when it becomes true RunEvaluation returns
  // Aborted("stopped") and nothing is written.
  const std::atomic<bool>* stop_requested = nullptr;
};

// Runs the comparison: one "fjord.compare/1" report per dataset, in order
// (docs/comparison.md). Errors: the datasets' (InvalidArgument naming the
// file, line and field), the models' and adapters' (as FromPretrained's),
// Aborted when stopped.
absl::StatusOr<std::vector<nlohmann::ordered_json>> RunEvaluation(const EvaluationConfig& config,
                                                                  const EvaluationOptions& options);

// {"schema": "fjord.evaluation/1", "job", "model", "datasets": reports}.
nlohmann::ordered_json EvaluationReport(const EvaluationConfig& config,
                                        const std::vector<nlohmann::ordered_json>& reports);

// A table of one dataset's report for people (candidates × metrics, the
// verdicts that exist), as fjord-compare prints it.
std::string ComparisonTable(const nlohmann::ordered_json& report);

// The report as a self-contained HTML page (runtime/eval/report_html.h).
absl::StatusOr<std::string> RenderReport(const nlohmann::ordered_json& report);

// A job's result: <output_dir>/report/report.json (and report.html when the
// HTML renderer accepts it), each written atomically.
absl::Status WriteEvaluationReport(const std::string& output_dir,
                                   const nlohmann::ordered_json& report);

}  // namespace fjord::lora

#endif  // FJORD_LORA_COMPARE_H_
