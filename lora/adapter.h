// LoRA adapters on a CausalLM: injection by target module names, PEFT
// save/load, merge/unmerge.
//
//   FJORD_ASSIGN_OR_RETURN(auto lm, CausalLM::FromPretrained(dir, torch::kFloat32, torch::kCPU));
//   lora::LoraConfig config;             // r 8, alpha 8, all-linear by default
//   FJORD_ASSIGN_OR_RETURN(auto adapter, lora::LoraAdapter::Inject(*lm, config, /*seed=*/42));
//   ... train adapter->NamedParameters() ...
//   FJORD_RETURN_IF_ERROR(adapter->Save("out/adapter"));   // PeftModel.from_pretrained reads it
//
//   // Later, or with an adapter made by peft's save_pretrained:
//   FJORD_ASSIGN_OR_RETURN(auto loaded, lora::LoraAdapter::FromPretrained(*lm2, "out/adapter"));
//
// The adapter swaps the targeted linear layers of the model for LoraLinear
// layers (lora_linear.h) through CausalLM::LinearSlots(); the model owns them
// from then on and the adapter keeps shared references. Parameter names are
// the model's: "<module path>.lora_A.weight", "<module path>.lora_B.weight".
//
// Thread-safety: none; use from the thread that trains the model.
#ifndef FJORD_LORA_ADAPTER_H_
#define FJORD_LORA_ADAPTER_H_

#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lora/lora_config.h"
#include "lora/lora_linear.h"
#include "runtime/model/model.h"
#include "runtime/util/env.h"

namespace fjord::lora {

// The model's linear layers as target matching sees them (LinearSlots order).
std::vector<ModuleInfo> ModulesOf(CausalLM& model);

// A copy of an adapted layer's base weight that an adapter file carries
// (peft writes lm_head's when it is a target: BaseLayerCopyKey) must be the
// base model's weight: fjord keeps the base frozen as it is. Equal means
// equal once both are in the narrower of their two dtypes (a copy saved in
// bf16 of an fp32 base, or the reverse); between fp16 and bf16, within 1% of
// the weight's largest entry. InvalidArgument naming `file`, `key` and the
// largest difference otherwise.
absl::Status CheckBaseLayerCopy(const std::string& file, const std::string& key,
                                const torch::Tensor& copy, const torch::Tensor& base);

class LoraAdapter {
 public:
  // Wraps each linear layer `config` targets in a LoraLinear with the rank
  // and scale ResolveTargets gives it. The A matrices are drawn in module
  // order from one CPU generator seeded with `seed` (the same A on every
  // device); B starts at zero. Errors: InvalidArgument from ResolveTargets
  // (bad config, nothing matched); FailedPrecondition when a targeted layer
  // is not a plain DenseLinear (already adapted).
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> Inject(CausalLM& model, LoraConfig config,
                                                             uint64_t seed);

  // Reads a PEFT adapter directory (adapter_config.json and
  // adapter_model.safetensors, as peft's save_pretrained writes), injects it
  // into `model` and loads its weights (converted to fp32). Errors: NotFound
  // for a missing file; InvalidArgument naming the file and field or key
  // (ParseAdapterConfig, ResolveTargets, CheckAdapterTensors: unsupported
  // options, missing/extra keys, wrong shapes, a rank that disagrees with
  // the config); DataLoss for a corrupt safetensors file. On error the model
  // is left unchanged.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> FromPretrained(CausalLM& model,
                                                                     const std::string& dir,
                                                                     Env* env = nullptr);

  // Writes dir/adapter_config.json and dir/adapter_model.safetensors (fp32,
  // __metadata__ {"format": "pt"}), each atomically; creates dir. Works
  // merged or not. Errors: the Env's (ResourceExhausted for a full disk, ...).
  absl::Status Save(const std::string& dir, Env* env = nullptr) const;

  // Loads weights saved by Save into this adapter (resume). dir's
  // adapter_config.json must adapt the same modules with the same ranks and
  // scales (FailedPrecondition naming the difference otherwise); the tensor
  // checks and errors are FromPretrained's. Nothing changes on error.
  absl::Status LoadWeights(const std::string& dir, Env* env = nullptr);

  // (name, parameter) of every A and B in module order, A before B.
  std::vector<std::pair<std::string, torch::Tensor>> NamedParameters() const;

  // Merge / Unmerge every layer (LoraLinear::Merge). Merge refuses
  // (FailedPrecondition, nothing merged) an adapted lm_head that shares its
  // matrix with the embeddings (tie_word_embeddings): merging would change
  // the embeddings too.
  absl::Status Merge();
  void Unmerge();
  // Every layer on or off (LoraLinear::set_enabled): off, the model is its
  // base. FailedPrecondition when switching off while merged.
  absl::Status SetEnabled(bool enabled);

  // Puts the original DenseLinear layers back into the model (the adapter's
  // layers keep their weights but are no longer used). Unmerges first.
  void Detach();

  const LoraConfig& config() const { return config_; }
  const std::vector<AdaptedModule>& modules() const { return modules_; }
  // The layers, in modules() order.
  const std::vector<std::shared_ptr<LoraLinear>>& layers() const { return layers_; }
  int64_t num_parameters() const;

 private:
  LoraAdapter() = default;
  // Checks dir's files against `modules` and reads its tensors (fp32, in
  // modules order: A, B, A, B, ...). A copy of a module's base weight in the
  // file (peft's save_embedding_layers) is checked against base_weight(i),
  // module i's base weight in the model (CheckBaseLayerCopy).
  static absl::StatusOr<std::vector<torch::Tensor>> ReadWeights(
      const std::string& dir, const std::vector<AdaptedModule>& modules, Env* env,
      const std::function<torch::Tensor(size_t)>& base_weight);

  CausalLM* model_ = nullptr;
  LoraConfig config_;
  std::vector<AdaptedModule> modules_;
  std::vector<std::shared_ptr<LoraLinear>> layers_;
};

}  // namespace fjord::lora

#endif  // FJORD_LORA_ADAPTER_H_
