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

namespace fjord::lora {

struct EvaluationConfig {
  // The base: config.json, safetensors, tokenizer.json (and its template).
  std::string model;
  struct Candidate {
    std::string name;
    // "" (with no files below): the base itself; else a PEFT adapter directory.
    std::string adapter;
    // Or an adapter given as its two files (uploaded to fjordd): they are
    // copied into <output_dir>/adapters/<name>/ before use.
    std::string adapter_config;  // adapter_config.json
    std::string adapter_model;   // adapter_model.safetensors
  };
  std::vector<Candidate> candidates;
  struct Dataset {
    std::string name;  // in the report ("data"); the path when empty
    std::string path;  // JSONL of {"prompt", "answer"} lines (data/heldout.h)
  };
  std::vector<Dataset> datasets;
  // A subset of kComparisonMetrics; empty: all of them.
  std::vector<std::string> metrics;
  std::string chat_template = "auto";  // as data.chat_template of a training job
  int64_t max_new_tokens = 64;         // per reply
  int64_t batch_size = 8;              // prompts per generation batch
  int64_t samples = 5;                 // replies shown side by side per dataset
  int64_t bootstrap = 2000;            // resamples per interval
  uint64_t seed = 0;                   // the bootstrap's seed
  // "auto" (CUDA when there is a GPU), "cpu" or "cuda". float32 on CPU,
  // bfloat16 on CUDA.
  std::string device = "auto";
  // A model directory whose model judges every pair's replies; "" = none.
  std::string judge;
  // Where a job writes report/report.json and report/report.html (and the
  // copies of uploaded adapters); "" for none (fjord-compare writes where
  // its flags say).
  std::string output_dir;
  std::string job_id;  // in the report of a job; "" = none
};

// Every metric a comparison reports, in report order.
const std::vector<std::string>& ComparisonMetrics();

// The job file of an evaluation job: one mapping `evaluation:` with the
// fields above (docs/comparison.md shows one). Strict: an unknown key, a
// value of the wrong type or out of range is InvalidArgument naming
// NAME:LINE and the field; model, candidates and datasets are required.
absl::StatusOr<EvaluationConfig> ParseEvaluationConfig(absl::string_view yaml,
                                                       absl::string_view name);
absl::StatusOr<EvaluationConfig> LoadEvaluationConfig(const std::string& path);
std::string EvaluationConfigToYaml(const EvaluationConfig& config);
// True when `yaml` is an evaluation job file (its top-level mapping has the
// key `evaluation`), not a training job's.
bool IsEvaluationYaml(absl::string_view yaml);

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
absl::StatusOr<std::vector<nlohmann::ordered_json>> RunEvaluation(
    const EvaluationConfig& config, const EvaluationOptions& options);

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
