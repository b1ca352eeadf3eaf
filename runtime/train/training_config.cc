#include "runtime/train/training_config.h"

#include "absl/strings/str_cat.h"
#include "runtime/train/config_yaml.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
namespace config_yaml {

const Schema<TrainingConfig>& TrainingConfigSchema() {
  using C = TrainingConfig;
  static const Schema<C>* schema = [] {
    auto* s = new Schema<C>;
    s->what = "the training config";
    std::vector<Field<C>>& v = s->fields;
    constexpr double kBig = 1e18;
    v.push_back(StringField<C>("model", "path", [](C& c) -> std::string& { return c.model.path; }));
    v.push_back(StringField<C>("model", "dtype", [](C& c) -> std::string& { return c.model.dtype; },
                               {"auto", "float32", "bfloat16", "float16"}));
    v.push_back(StringField<C>("model", "quantization",
                               [](C& c) -> std::string& { return c.model.quantization; },
                               {"none", "nf4"}));
    v.push_back(
        BoolField<C>("model", "shard_base", [](C& c) -> bool& { return c.model.shard_base; }));
    v.push_back(StringField<C>("data", "train", [](C& c) -> std::string& { return c.data.train; }));
    v.push_back(StringField<C>("data", "validation",
                               [](C& c) -> std::string& { return c.data.validation; }));
    v.push_back(
        StringField<C>("data", "tokenizer", [](C& c) -> std::string& { return c.data.tokenizer; }));
    v.push_back(StringField<C>("data", "chat_template",
                               [](C& c) -> std::string& { return c.data.chat_template; },
                               {"auto", "model", "llama3", "chatml", "none"}));
    v.push_back(NumberField<int64_t, C>(
        "data", "max_length", [](C& c) -> int64_t& { return c.data.max_length; }, 2, 1 << 20));
    v.push_back(BoolField<C>("data", "packing", [](C& c) -> bool& { return c.data.packing; }));
    v.push_back(BoolField<C>("data", "train_on_inputs",
                             [](C& c) -> bool& { return c.data.train_on_inputs; }));
    v.push_back(BoolField<C>("data", "truncate", [](C& c) -> bool& { return c.data.truncate; }));
    v.push_back(BoolField<C>("data", "shuffle", [](C& c) -> bool& { return c.data.shuffle; }));
    v.push_back(StringField<C>("training", "method",
                               [](C& c) -> std::string& { return c.training.method; },
                               {"sft", "dpo", "orpo", "simpo"}));
    v.push_back(NumberField<int64_t, C>(
        "training", "epochs", [](C& c) -> int64_t& { return c.training.epochs; }, 1, 100000));
    v.push_back(NumberField<int64_t, C>(
        "training", "max_steps", [](C& c) -> int64_t& { return c.training.max_steps; }, 0, kBig));
    v.push_back(NumberField<int64_t, C>(
        "training", "micro_batch_size",
        [](C& c) -> int64_t& { return c.training.micro_batch_size; }, 1, 1 << 16));
    v.push_back(NumberField<int64_t, C>(
        "training", "gradient_accumulation_steps",
        [](C& c) -> int64_t& { return c.training.gradient_accumulation_steps; }, 1, 1 << 16));
    v.push_back(NumberField<double, C>(
        "training", "learning_rate", [](C& c) -> double& { return c.training.learning_rate; }, 0,
        10));
    v.push_back(NumberField<double, C>(
        "training", "weight_decay", [](C& c) -> double& { return c.training.weight_decay; }, 0,
        10));
    v.push_back(NumberField<double, C>(
        "training", "adam_beta1", [](C& c) -> double& { return c.training.adam_beta1; }, 0,
        0.999999));
    v.push_back(NumberField<double, C>(
        "training", "adam_beta2", [](C& c) -> double& { return c.training.adam_beta2; }, 0,
        0.999999999));
    v.push_back(NumberField<double, C>(
        "training", "adam_epsilon", [](C& c) -> double& { return c.training.adam_epsilon; }, 0, 1));
    v.push_back(StringField<C>("training", "lr_scheduler",
                               [](C& c) -> std::string& { return c.training.lr_scheduler; },
                               {"cosine", "linear", "constant"}));
    v.push_back(NumberField<int64_t, C>(
        "training", "warmup_steps", [](C& c) -> int64_t& { return c.training.warmup_steps; }, 0,
        kBig));
    v.push_back(NumberField<double, C>(
        "training", "warmup_ratio", [](C& c) -> double& { return c.training.warmup_ratio; }, 0, 1));
    v.push_back(NumberField<double, C>(
        "training", "min_lr_ratio", [](C& c) -> double& { return c.training.min_lr_ratio; }, 0, 1));
    v.push_back(NumberField<double, C>(
        "training", "max_grad_norm", [](C& c) -> double& { return c.training.max_grad_norm; }, -1,
        1e9));
    v.push_back(NumberField<uint64_t, C>(
        "training", "seed", [](C& c) -> uint64_t& { return c.training.seed; }, 0, 1.8e19));
    v.push_back(BoolField<C>("training", "gradient_checkpointing",
                             [](C& c) -> bool& { return c.training.gradient_checkpointing; }));
    v.push_back(StringField<C>("training", "device",
                               [](C& c) -> std::string& { return c.training.device; },
                               {"auto", "cpu", "cuda"}));
    v.push_back(StringField<C>("training", "kernels",
                               [](C& c) -> std::string& { return c.training.kernels; },
                               {"auto", "fused", "reference"}));
    v.push_back(NumberField<int64_t, C>(
        "training", "threads", [](C& c) -> int64_t& { return c.training.threads; }, 0, 1024));
    v.push_back(NumberField<double, C>(
        "preference", "beta", [](C& c) -> double& { return c.preference.beta; }, 1e-6, 1e6));
    v.push_back(StringField<C>("preference", "loss_type",
                               [](C& c) -> std::string& { return c.preference.loss_type; },
                               {"sigmoid", "robust", "hinge", "ipo"}));
    v.push_back(NumberField<double, C>(
        "preference", "label_smoothing",
        [](C& c) -> double& { return c.preference.label_smoothing; }, 0, 0.499999));
    v.push_back(NumberField<double, C>(
        "preference", "simpo_gamma", [](C& c) -> double& { return c.preference.simpo_gamma; }, -1e6,
        1e6));
    v.push_back(NumberField<double, C>(
        "preference", "cpo_alpha", [](C& c) -> double& { return c.preference.cpo_alpha; }, 0, 1e6));
    v.push_back(BoolField<C>("preference", "precompute_ref",
                             [](C& c) -> bool& { return c.preference.precompute_ref; }));
    v.push_back(NumberField<int64_t, C>(
        "eval", "every_steps", [](C& c) -> int64_t& { return c.eval.every_steps; }, 0, kBig));
    v.push_back(NumberField<int64_t, C>(
        "eval", "max_batches", [](C& c) -> int64_t& { return c.eval.max_batches; }, 0, kBig));
    v.push_back(
        StringField<C>("eval", "heldout", [](C& c) -> std::string& { return c.eval.heldout; }));
    v.push_back(NumberField<int64_t, C>(
        "eval", "max_new_tokens", [](C& c) -> int64_t& { return c.eval.max_new_tokens; }, 1, 4096));
    v.push_back(NumberField<int64_t, C>(
        "checkpoint", "every_steps", [](C& c) -> int64_t& { return c.checkpoint.every_steps; }, 0,
        kBig));
    v.push_back(NumberField<int64_t, C>(
        "checkpoint", "keep_last", [](C& c) -> int64_t& { return c.checkpoint.keep_last; }, 1,
        1000000));
    v.push_back(StringField<C>("output", "dir", [](C& c) -> std::string& { return c.output.dir; }));
    s->check = [](const C& c, absl::string_view name) -> absl::Status {
      if (c.model.path.empty())
        return absl::InvalidArgumentError(absl::StrCat(name, ": field 'model.path' is required"));
      if (c.data.train.empty())
        return absl::InvalidArgumentError(absl::StrCat(name, ": field 'data.train' is required"));
      if (c.output.dir.empty())
        return absl::InvalidArgumentError(absl::StrCat(name, ": field 'output.dir' is required"));
      if (c.training.method != "dpo" && c.preference.loss_type != "sigmoid") {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": field 'preference.loss_type': ", c.preference.loss_type,
                         " is a dpo loss; training.method is ", c.training.method));
      }
      if (c.training.method != "sft" && !c.eval.heldout.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            name,
            ": field 'eval.heldout': held-out answer accuracy is measured for sft only; "
            "preference methods report rewards/accuracies on data.validation"));
      }
      return absl::OkStatus();
    };
    return s;
  }();
  return *schema;
}

}  // namespace config_yaml

absl::Status TrainingConfig::Validate() const {
  return config_yaml::Validate(config_yaml::TrainingConfigSchema(), *this, "training config");
}

std::string TrainingConfig::ToYaml() const {
  return config_yaml::ToYaml(config_yaml::TrainingConfigSchema(), *this);
}

absl::StatusOr<TrainingConfig> ParseTrainingConfig(absl::string_view yaml, absl::string_view name) {
  return config_yaml::Parse(config_yaml::TrainingConfigSchema(), yaml, name);
}

absl::StatusOr<TrainingConfig> LoadTrainingConfig(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::string text, config_yaml::ReadFile(path, "training config"));
  return ParseTrainingConfig(text, path);
}

}  // namespace fjord::train
