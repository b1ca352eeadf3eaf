// The configuration of a comparison (lora/compare.h): what fjord-compare's
// flags say, and the job file (`job.yaml` with one mapping `evaluation:`)
// fjordd writes for an evaluation job and fjord-train reads. Plain C++
// (yaml-cpp, no LibTorch): the daemon writes it.
#ifndef FJORD_LORA_EVAL_CONFIG_H_
#define FJORD_LORA_EVAL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

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
    // Its base: "" for `model` above, else another model directory (the
    // candidates are run base by base; losses are compared only between
    // candidates whose bases share a tokenizer). model_name: its name in
    // reports ("" = the path).
    std::string model;
    std::string model_name;
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
  // The base's name in reports (fjordd's model name); "" = the path.
  std::string model_name;
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

}  // namespace fjord::lora

#endif  // FJORD_LORA_EVAL_CONFIG_H_
