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
};

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_ADAPTER_METHOD_H_
