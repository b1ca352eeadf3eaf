// The seam between the trainer and a parameter-efficient method. runtime/
// knows nothing of LoRA: lora/ implements this interface (lora::LoraMethod)
// and fjord-train hands it to RunTraining.
#ifndef FJORD_RUNTIME_TRAIN_ADAPTER_METHOD_H_
#define FJORD_RUNTIME_TRAIN_ADAPTER_METHOD_H_

#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/model.h"
#include "runtime/util/env.h"

namespace fjord::train {

class AdapterMethod {
 public:
  virtual ~AdapterMethod() = default;
  // Adds the method's trainable parameters to `model` (initialised from
  // `seed`). Called once, before anything else. InvalidArgument when the
  // method's settings do not fit the model (e.g. no module matched).
  virtual absl::Status Attach(CausalLM& model, uint64_t seed) = 0;
  // Trainable parameters in a fixed order, with stable names (optimizer
  // state is keyed by them).
  virtual std::vector<std::pair<std::string, torch::Tensor>> TrainableParameters() = 0;
  // Writes the adapter to `dir` in the method's interchange format (PEFT).
  virtual absl::Status Save(const std::string& dir) = 0;
  // Loads trainable weights saved by Save from `dir` (resume).
  virtual absl::Status Load(const std::string& dir) = 0;
  // Save and Load with every file access through `env` (null:
  // Env::Default(), what Save and Load use). These defaults call Save / Load
  // for a null or the default Env and return Unimplemented for any other; a
  // method whose files can go through an Env (lora::LoraMethod) overrides
  // both.
  virtual absl::Status SaveTo(const std::string& dir, Env* env) {
    if (env == nullptr || env == Env::Default()) return Save(dir);
    return absl::UnimplementedError("this adapter method writes through the default Env only");
  }
  virtual absl::Status LoadFrom(const std::string& dir, Env* env) {
    if (env == nullptr || env == Env::Default()) return Load(dir);
    return absl::UnimplementedError("this adapter method reads through the default Env only");
  }
  // Switches the method's layers off (the model computes as its base alone)
  // or on again: preference tuning's reference model without a second copy
  // of the base. Default: Unimplemented (such a method cannot train dpo).
  virtual absl::Status SetEnabled(bool enabled) {
    (void)enabled;
    return absl::UnimplementedError("this adapter method cannot be switched off");
  }
};

// The adapter off for the scope's lifetime, on again at its end:
//   { AdapterOff off(adapter); ... forwards of the base model ... }
// The caller checks once that SetEnabled works (the trainer does at setup).
class AdapterOff {
 public:
  explicit AdapterOff(AdapterMethod& adapter) : adapter_(adapter) {
    (void)adapter_.SetEnabled(false);
  }
  ~AdapterOff() { (void)adapter_.SetEnabled(true); }
  AdapterOff(const AdapterOff&) = delete;
  AdapterOff& operator=(const AdapterOff&) = delete;

 private:
  AdapterMethod& adapter_;
};

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_ADAPTER_METHOD_H_
