// The one mapping from a customer's job to fjord-train's config.
//
// A customer describes a job with the SDK's job fields (protocol::JobSpec:
// `hyperparameters.batch_size`, `lora.r`, ...; docs/user-guide.md), fjord-train
// reads its own YAML (lora::JobConfig: `training.micro_batch_size`, ...;
// lora/job_config.h). fjordd writes one from the other here, and
// nowhere else; docs/user-guide.md shows the two side by side.
#ifndef FJORD_DAEMON_JOBS_JOB_YAML_H_
#define FJORD_DAEMON_JOBS_JOB_YAML_H_

#include <string>

#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"
#include "lora/eval_config.h"
#include "lora/job_config.h"

namespace fjord::daemon {

// Where the job's files are on this node, resolved by fjordd.
struct JobPaths {
  std::string model;       // the HF checkpoint directory the config names for spec.model
  std::string train;       // the training JSONL
  std::string validation;  // "" = none
  std::string heldout;     // "" = none; the held-out prompts ({"prompt", "answer"} lines)
  std::string output_dir;  // the job's directory on the storage root
};

// fjord-train's config for `spec`: the data, LoRA and training fields mapped
// one by one (quantization -> model.quantization, shard_base ->
// model.shard_base, heldout_file -> eval.heldout, batch_size ->
// training.micro_batch_size, eval_every_steps -> eval.every_steps,
// checkpoint_every_steps -> checkpoint.every_steps, seed -> training.seed,
// ...); every field the SDK does not set keeps fjord-train's default.
lora::JobConfig TrainConfigFor(const protocol::JobSpec& spec, const JobPaths& paths);

// TrainConfigFor(...) as YAML, checked by fjord-train's own parser (the last
// word on the config): InvalidArgument with param "hyperparameters" naming
// what it refused.
absl::StatusOr<std::string> TrainYamlFor(const protocol::JobSpec& spec, const JobPaths& paths);

// Where an evaluation job's files are on this node, resolved by fjordd.
struct EvaluationPaths {
  std::string model;  // the base's directory
  std::string judge;  // "" = none
  // In the spec's order: each candidate's adapter directory (a fine-tune
  // job's adapter/) or its two uploaded files; all empty for the base.
  std::vector<lora::EvaluationConfig::Candidate> candidates;
  std::vector<std::string> datasets;  // the files, in the spec's order
  std::string output_dir;             // the job's directory
};

// fjord-train's evaluation job file (lora/eval_config.h) for `spec`; the
// datasets keep the names the customer gave (a file id or tenant path), the
// report names them so. Checked by its own parser: InvalidArgument with
// param "evaluation" naming what it refused.
absl::StatusOr<std::string> EvaluationYamlFor(const protocol::JobSpec& spec,
                                              const EvaluationPaths& paths,
                                              const std::string& job_id);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_JOBS_JOB_YAML_H_
