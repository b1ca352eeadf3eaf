// The job config: one YAML file naming the base model, the data, the LoRA
// settings, the training hyperparameters and the output directory. Read by
// fjord-train (one job per process) and validated by fjordd before queueing.
//
// Every field has a default except model.path, data.train and output.dir.
// Unknown keys are refused (a typo must not silently mean "default").
#ifndef FJORD_RUNTIME_TRAIN_JOB_CONFIG_H_
#define FJORD_RUNTIME_TRAIN_JOB_CONFIG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::train {

struct JobConfig {
  struct Model {
    std::string path;              // HF checkpoint directory (required)
    std::string dtype = "auto";    // auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
  } model;
  struct Data {
    std::string train;             // JSONL (required)
    std::string validation;        // JSONL; empty: no evaluation
    std::string tokenizer;         // tokenizer.json; default <model.path>/tokenizer.json
    std::string chat_template = "auto";  // auto | llama3 | chatml | none
    int64_t max_length = 1024;     // tokens per packed row (and longest example)
    bool packing = true;           // several examples per row with block-diagonal attention
    bool train_on_inputs = false;  // true: prompts carry loss too
    bool truncate = true;          // false: an over-long example is an error
    bool shuffle = true;
  } data;
  struct Lora {
    int64_t r = 16;                // higher: more capacity, more memory
    double alpha = 32;
    double dropout = 0.05;
    // As PEFT: a list names modules (a path ending in ".<name>", e.g. q_proj);
    // a single string is "all-linear" (every linear layer but lm_head) or a
    // regex that must match the whole module path (".*layers\.[0-3]\..*_proj").
    std::vector<std::string> target_modules = {"all-linear"};
    bool target_modules_regex = false;  // set when target_modules was one string other than all-linear
    bool use_rslora = false;       // scale alpha/sqrt(r) instead of alpha/r
    std::vector<int64_t> layers_to_transform;  // empty: all layers
    // Per-module rank / alpha: the first key (a regex) matching the end of a
    // module path after a '.' wins, e.g. {down_proj: 32}. As PEFT's.
    std::vector<std::pair<std::string, int64_t>> rank_pattern;
    std::vector<std::pair<std::string, double>> alpha_pattern;
  } lora;
  struct Training {
    int64_t epochs = 1;
    int64_t max_steps = 0;         // > 0 overrides epochs
    int64_t micro_batch_size = 4;  // rows of max_length tokens per forward
    int64_t gradient_accumulation_steps = 1;
    double learning_rate = 2e-4;
    double weight_decay = 0.0;
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_epsilon = 1e-8;
    std::string lr_scheduler = "cosine";  // cosine | linear | constant
    int64_t warmup_steps = 0;
    double warmup_ratio = 0.0;     // used when warmup_steps == 0
    double min_lr_ratio = 0.0;     // final lr as a fraction of learning_rate
    double max_grad_norm = 1.0;    // <= 0: no clipping
    uint64_t seed = 42;
    bool gradient_checkpointing = false;  // less activation memory, ~30% more compute
    std::string device = "auto";   // auto | cpu | cuda
    std::string kernels = "auto";  // auto | fused | reference
    int64_t threads = 0;           // CPU threads; 0: LibTorch's default
  } training;
  struct Eval {
    int64_t every_steps = 0;       // 0: only at the end
    int64_t max_batches = 0;       // 0: the whole validation file
    std::string heldout;           // JSONL of {"prompt","answer"}: greedy-answer accuracy
    int64_t max_new_tokens = 24;
  } eval;
  struct Checkpoint {
    int64_t every_steps = 0;       // 0: only at the end
    int64_t keep_last = 3;         // older step checkpoints are deleted
  } checkpoint;
  struct Output {
    std::string dir;               // required: checkpoints/ and adapter/ go here
  } output;

  // The config as YAML (all fields, defaults included), for checkpoints and logs.
  std::string ToYaml() const;
};

// Parses YAML text. InvalidArgument naming `name`, the line and the field for
// a malformed document, an unknown key, a wrong type or an out-of-range value.
absl::StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml, absl::string_view name);
// Reads and parses a file (NotFound if missing).
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path);
// Applies "section.field=value" overrides (as from --set), then re-validates.
absl::Status ApplyOverride(JobConfig& config, absl::string_view assignment);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_JOB_CONFIG_H_
