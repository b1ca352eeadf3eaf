// LoraMethod: LoRA as the trainer's parameter-efficient method
// (train::AdapterMethod), configured from a LoraConfig or from a job
// config's lora section (lora/job_config.h).
//
//   lora::LoraConfig lora;                          // lora/lora_config.h
//   lora.r = 8;
//   lora.alpha = 16;
//   lora::LoraMethod method(lora);
//   train::TrainOptions options;
//   options.adapter = &method;
//   FJORD_ASSIGN_OR_RETURN(train::TrainResult result, train::RunTraining(training_config,
//   options));
//   // result.adapter_dir: the PEFT adapter (LoraAdapter::FromPretrained loads it).
//
// Thread-safety: none (the trainer's thread).
#ifndef FJORD_LORA_LORA_METHOD_H_
#define FJORD_LORA_LORA_METHOD_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lora/adapter.h"
#include "lora/job_config.h"
#include "lora/lora_config.h"
#include "runtime/train/adapter_method.h"

namespace fjord::lora {

// The LoraConfig a job's lora section describes (base_model_name_or_path is
// model.path).
LoraConfig LoraConfigFromJob(const JobConfig& job);

class LoraMethod : public train::AdapterMethod {
 public:
  explicit LoraMethod(const JobConfig& job)
      : config_(LoraConfigFromJob(job)), init_from_(job.lora.init_from) {}
  explicit LoraMethod(LoraConfig config) : config_(std::move(config)) {}

  // LoraAdapter::Inject, then the weights of lora.init_from when the job
  // names one (LoraAdapter::LoadWeights' errors, prefixed "lora.init_from").
  // FailedPrecondition when called twice.
  absl::Status Attach(CausalLM& model, uint64_t seed) override;
  // LoraAdapter::NamedParameters (empty before Attach).
  std::vector<std::pair<std::string, torch::Tensor>> TrainableParameters() override;
  // LoraAdapter::Save / LoadWeights; FailedPrecondition before Attach.
  absl::Status Save(const std::string& dir) override;
  absl::Status Load(const std::string& dir) override;
  // The same through `env` (null: Env::Default()).
  absl::Status SaveTo(const std::string& dir, Env* env) override;
  absl::Status LoadFrom(const std::string& dir, Env* env) override;
  // LoraAdapter::SetEnabled; FailedPrecondition before Attach.
  absl::Status SetEnabled(bool enabled) override;

  const LoraConfig& config() const { return config_; }
  LoraAdapter* adapter() { return adapter_.get(); }  // null before Attach

 private:
  LoraConfig config_;
  std::string init_from_;
  std::unique_ptr<LoraAdapter> adapter_;
};

}  // namespace fjord::lora

#endif  // FJORD_LORA_LORA_METHOD_H_
