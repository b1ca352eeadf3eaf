// Hugging Face PEFT's on-disk LoRA adapter, the parts that need no LibTorch
// (so the daemon can check adapters and the fuzzer can reach them):
//
//   <dir>/adapter_config.json        peft_type "LORA", r, lora_alpha, ...
//   <dir>/adapter_model.safetensors  for each adapted module M (HF path):
//       base_model.model.<M>.lora_A.weight   (r, in_features)
//       base_model.model.<M>.lora_B.weight   (out_features, r)
//     __metadata__ {"format": "pt"}
//
// This is what peft's save_pretrained writes and PeftModel.from_pretrained
// (and vLLM) read. fjord reads LoRA adapters with bias "none" only, and
// refuses what it does not implement rather than loading it wrongly: DoRA,
// fan_in_fan_out, trained biases, modules_to_save, layer replication,
// trainable tokens, target_parameters, aLoRA, QALoRA, other PEFT types.
//
// Thread-safety: pure functions.
#ifndef FJORD_LORA_PEFT_FORMAT_H_
#define FJORD_LORA_PEFT_FORMAT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lora/lora_config.h"
#include "runtime/io/safetensors_header.h"

namespace fjord::lora {

inline constexpr char kAdapterConfigName[] = "adapter_config.json";
inline constexpr char kAdapterWeightsName[] = "adapter_model.safetensors";

// Parses adapter_config.json text; `file` names it in messages. Fields fjord
// does not use (inference_mode, init_lora_weights, auto_mapping, ...) are
// ignored; target_modules null means PEFT's default for Llama and Qwen2,
// ["q_proj", "v_proj"]. InvalidArgument naming the file and field for
// malformed JSON, a wrong type, a value out of range (LoraConfig::Validate)
// or an unsupported option (peft_type other than LORA, task_type other than
// CAUSAL_LM, use_dora, fan_in_fan_out, bias other than "none", lora_bias,
// modules_to_save, layer_replication, trainable_token_indices,
// target_parameters, alora_invocation_tokens, use_qalora).
absl::StatusOr<LoraConfig> ParseAdapterConfig(absl::string_view json_text, absl::string_view file);

// adapter_config.json for `config` as fjord writes it (2-space indented,
// top-level keys sorted, trailing newline), with the fields PEFT >= 0.10
// knows. For all-linear, target_modules lists LeafNames(adapted); otherwise
// as given. rank_pattern/alpha_pattern keep their order (first match wins).
std::string AdapterConfigJson(const LoraConfig& config, const std::vector<AdaptedModule>& adapted);

// "base_model.model.<path>.lora_A.weight" / ".lora_B.weight".
std::string LoraAKey(absl::string_view module_path);
std::string LoraBKey(absl::string_view module_path);

// "base_model.model.<path>.base_layer.weight": a copy of an adapted
// layer's base weight in the adapter file. peft writes one for lm_head (and
// embed_tokens) when they are among the targets (save_embedding_layers,
// "auto" by default), in case the adapter was trained on a resized
// vocabulary.
std::string BaseLayerCopyKey(absl::string_view module_path);

// Checks an adapter_model.safetensors header against the modules the config
// adapts: exactly the keys LoraAKey/LoraBKey of each, with shapes (r, in) and
// (out, r), plus for any of them a BaseLayerCopyKey of shape (out, in), in a
// float dtype (F32, BF16, F16, F64); loaders check such a copy against the
// base model's weight (BaseLayerCopies, CheckBaseLayerCopy). InvalidArgument naming
// `file` and the key: missing keys (listed), extra keys (listed; DoRA
// magnitude vectors, embedding adapters and adapter-name infixes are named
// as such), a wrong shape (both shapes, and the r the config gives), a
// non-float dtype.
absl::Status CheckAdapterTensors(const io::SafetensorsHeader& header,
                                 const std::vector<AdaptedModule>& adapted, absl::string_view file);

// The adapted modules (indices into `adapted`) whose base weight the header
// holds a copy of (BaseLayerCopyKey), in `adapted`'s order.
std::vector<size_t> BaseLayerCopies(const io::SafetensorsHeader& header,
                                    const std::vector<AdaptedModule>& adapted);

// The linear layers of a decoder with these sizes, in the model's order
// (layer by layer: q, k, v, o, gate, up, down; with `fused` (Phi3): qkv, o,
// gate_up, down; then lm_head): the ModuleInfo list of runtime/model's
// CausalLM::LinearSlots, without LibTorch (for tools, the daemon and the
// fuzzer).
std::vector<ModuleInfo> DecoderModules(int64_t num_layers, int64_t hidden, int64_t q_size,
                                       int64_t kv_size, int64_t intermediate, int64_t vocab,
                                       bool fused = false);

}  // namespace fjord::lora

#endif  // FJORD_LORA_PEFT_FORMAT_H_
