#include "daemon/jobs/job_yaml.h"

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"

namespace fjord::daemon {

lora::JobConfig TrainConfigFor(const protocol::JobSpec& spec, const JobPaths& paths) {
  lora::JobConfig c;
  c.model.path = paths.model;
  c.model.quantization = spec.quantization;
  c.model.shard_base = spec.shard_base;
  c.data.train = paths.train;
  c.data.validation = paths.validation;
  c.eval.heldout = paths.heldout;
  const protocol::Hyperparameters& h = spec.hyperparameters;
  c.data.max_length = h.max_length;
  c.lora.r = spec.lora.r;
  c.lora.alpha = spec.lora.alpha;
  c.lora.dropout = spec.lora.dropout;
  c.lora.target_modules = spec.lora.target_modules;
  c.training.epochs = h.epochs;
  c.training.max_steps = h.max_steps;
  c.training.micro_batch_size = h.batch_size;
  c.training.gradient_accumulation_steps = h.gradient_accumulation_steps;
  c.training.learning_rate = h.learning_rate;
  c.training.weight_decay = h.weight_decay;
  c.training.lr_scheduler = h.lr_scheduler;
  c.training.warmup_steps = h.warmup_steps;
  c.training.max_grad_norm = h.max_grad_norm;
  c.training.seed = static_cast<uint64_t>(h.seed);
  c.eval.every_steps = h.eval_every_steps;
  c.checkpoint.every_steps = h.checkpoint_every_steps;
  c.output.dir = paths.output_dir;
  c.training.method = spec.method;
  const protocol::PreferenceSettings& p = spec.preference;
  c.preference.beta = p.beta;
  c.preference.loss_type = p.loss_type;
  c.preference.label_smoothing = p.label_smoothing;
  c.preference.simpo_gamma = p.simpo_gamma;
  c.preference.cpo_alpha = p.cpo_alpha;
  c.preference.precompute_ref = p.precompute_ref;
  return c;
}

absl::StatusOr<std::string> TrainYamlFor(const protocol::JobSpec& spec, const JobPaths& paths) {
  const std::string yaml = TrainConfigFor(spec, paths).ToYaml();
  if (absl::StatusOr<lora::JobConfig> back = lora::ParseJobConfig(yaml, "job.yaml"); !back.ok()) {
    return protocol::InvalidArgument(
        absl::StrCat("the job's config is invalid: ", back.status().message()), "hyperparameters");
  }
  return yaml;
}

absl::StatusOr<std::string> EvaluationYamlFor(const protocol::JobSpec& spec,
                                              const EvaluationPaths& paths,
                                              const std::string& job_id) {
  lora::EvaluationConfig c;
  c.model = paths.model;
  c.candidates = paths.candidates;
  for (size_t i = 0; i < spec.datasets.size() && i < paths.datasets.size(); ++i) {
    c.datasets.push_back({spec.datasets[i], paths.datasets[i]});
  }
  const protocol::EvalSettings& e = spec.evaluation;
  c.metrics = e.metrics;
  c.chat_template = e.chat_template;
  c.max_new_tokens = e.max_new_tokens;
  c.batch_size = e.batch_size;
  c.samples = e.samples;
  c.bootstrap = e.bootstrap;
  c.seed = static_cast<uint64_t>(e.seed);
  c.judge = paths.judge;
  c.output_dir = paths.output_dir;
  c.job_id = job_id;
  c.model_name = spec.model;
  const std::string yaml = lora::EvaluationConfigToYaml(c);
  if (absl::StatusOr<lora::EvaluationConfig> back = lora::ParseEvaluationConfig(yaml, "job.yaml");
      !back.ok()) {
    return protocol::InvalidArgument(
        absl::StrCat("the evaluation's config is invalid: ", back.status().message()),
        "evaluation");
  }
  return yaml;
}

}  // namespace fjord::daemon
