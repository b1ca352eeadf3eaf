// The job config: the YAML file fjord-train reads (one job per process) and
// fjordd writes and checks before queueing. It is the runtime's
// TrainingConfig (runtime/train/training_config.h: model, data, training,
// eval, checkpoint, output) plus a `lora:` section, in this order:
//
//   model:      {path: ..., dtype: auto}
//   data:       {train: ..., validation: ..., max_length: 1024, ...}
//   lora:       {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear, ...}
//   training:   {max_steps: ..., learning_rate: 2e-4, ...}
//   eval:       {every_steps: 0, ...}
//   checkpoint: {every_steps: 0, keep_last: 3}
//   output:     {dir: ...}
//
// Every field has a default except model.path, data.train and output.dir.
// Unknown keys are refused (a typo must not silently mean "default").
// Plain C++ (yaml-cpp, no LibTorch): the daemon and the fuzzer use it.
//
//   FJORD_ASSIGN_OR_RETURN(lora::JobConfig job, lora::LoadJobConfig("job.yaml"));
//   lora::LoraMethod method(job);                  // lora/lora_method.h
//   train::TrainOptions options;
//   options.adapter = &method;
//   options.config_yaml = job.ToYaml();            // checkpoints record the whole job
//   FJORD_ASSIGN_OR_RETURN(train::TrainResult r, train::RunTraining(job, options));
#ifndef FJORD_LORA_JOB_CONFIG_H_
#define FJORD_LORA_JOB_CONFIG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/train/training_config.h"

namespace fjord::lora {

// A TrainingConfig (RunTraining takes a JobConfig as one) with the LoRA
// settings of the job. LoraConfigFromJob (lora_method.h) turns them into a
// LoraConfig.
struct JobConfig : train::TrainingConfig {
  struct Lora {
    int64_t r = 16;  // higher: more capacity, more memory
    double alpha = 32;
    double dropout = 0.05;
    // As PEFT: a list names modules (a path ending in ".<name>", e.g. q_proj);
    // a single string is "all-linear" (every linear layer but lm_head) or a
    // regex that must match the whole module path (".*layers\.[0-3]\..*_proj").
    std::vector<std::string> target_modules = {"all-linear"};
    bool target_modules_regex =
        false;                // set when target_modules was one string other than all-linear
    bool use_rslora = false;  // scale alpha/sqrt(r) instead of alpha/r
    std::vector<int64_t> layers_to_transform;  // empty: all layers
    // Per-module rank / alpha: the first key (a regex) matching the end of a
    // module path after a '.' wins, e.g. {down_proj: 32}. As PEFT's.
    std::vector<std::pair<std::string, int64_t>> rank_pattern;
    std::vector<std::pair<std::string, double>> alpha_pattern;
    // A PEFT adapter directory whose weights start the training instead of
    // the fresh initialisation (continue from an adapter, as peft's
    // PeftModel.from_pretrained(..., is_trainable=True)): it must adapt the
    // same modules with the same ranks and scales as this section says.
    // A resume starts from its checkpoint instead. "" (default): fresh.
    std::string init_from;
  } lora;

  // The whole job as YAML (every section, defaults included), for job.yaml,
  // checkpoints and logs. (TrainingConfig::ToYaml, on the base, leaves lora out.)
  std::string ToYaml() const;
  // TrainingConfig::Validate over every section, lora included ("job config:
  // field 'lora.r': 0 is out of range [1, 4096]").
  absl::Status Validate() const;
};

// Parses YAML text. InvalidArgument naming `name`, the line and the field for
// a malformed document, an unknown section or key, a wrong type or an
// out-of-range value.
absl::StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml, absl::string_view name);
// Reads and parses a file (NotFound if missing).
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path);
// Applies "section.field=value" overrides (as from --set), then re-validates.
absl::Status ApplyOverride(JobConfig& config, absl::string_view assignment);

}  // namespace fjord::lora

#endif  // FJORD_LORA_JOB_CONFIG_H_
