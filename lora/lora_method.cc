#include "lora/lora_method.h"

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora {

LoraConfig LoraConfigFromJob(const JobConfig& job) {
  const auto& l = job.lora;
  LoraConfig c;
  c.r = l.r;
  c.alpha = l.alpha;
  c.dropout = l.dropout;
  c.use_rslora = l.use_rslora;
  if (l.target_modules.size() == 1 && l.target_modules[0] == "all-linear") {
    c.target_modules = TargetModules::AllLinear();
  } else if (l.target_modules_regex && l.target_modules.size() == 1) {
    c.target_modules = TargetModules::Regex(l.target_modules[0]);
  } else {
    c.target_modules = TargetModules::Names(l.target_modules);
  }
  c.layers_to_transform = l.layers_to_transform;
  c.rank_pattern = l.rank_pattern;
  c.alpha_pattern = l.alpha_pattern;
  c.base_model_name_or_path = job.model.path;
  return c;
}

absl::Status LoraMethod::Attach(CausalLM& model, uint64_t seed) {
  if (adapter_ != nullptr) return absl::FailedPreconditionError("LoraMethod: already attached");
  absl::StatusOr<std::unique_ptr<LoraAdapter>> a = LoraAdapter::Inject(model, config_, seed);
  if (!a.ok()) return absl::Status(a.status().code(), absl::StrCat("lora: ", a.status().message()));
  adapter_ = std::move(*a);
  if (!init_from_.empty()) {
    if (absl::Status s = adapter_->LoadWeights(init_from_); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("lora.init_from: ", s.message()));
    }
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, torch::Tensor>> LoraMethod::TrainableParameters() {
  if (adapter_ == nullptr) return {};
  return adapter_->NamedParameters();
}

absl::Status LoraMethod::Save(const std::string& dir) { return SaveTo(dir, nullptr); }

absl::Status LoraMethod::SetEnabled(bool enabled) {
  if (adapter_ == nullptr)
    return absl::FailedPreconditionError("LoraMethod: SetEnabled before Attach");
  return adapter_->SetEnabled(enabled);
}

absl::Status LoraMethod::Load(const std::string& dir) { return LoadFrom(dir, nullptr); }

absl::Status LoraMethod::SaveTo(const std::string& dir, Env* env) {
  if (adapter_ == nullptr) return absl::FailedPreconditionError("LoraMethod: Save before Attach");
  return adapter_->Save(dir, env);
}

absl::Status LoraMethod::LoadFrom(const std::string& dir, Env* env) {
  if (adapter_ == nullptr) return absl::FailedPreconditionError("LoraMethod: Load before Attach");
  return adapter_->LoadWeights(dir, env);
}

}  // namespace fjord::lora
