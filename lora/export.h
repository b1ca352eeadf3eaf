// Export of a base model with a LoRA adapter merged into its weights, as a
// plain Hugging Face checkpoint that transformers (and vLLM, llama.cpp's
// converters, ...) load without peft:
//
//   FJORD_RETURN_IF_ERROR(lora::ExportMerged("base/", "run/adapter", "merged/"));
//   // AutoModelForCausalLM.from_pretrained("merged/")
//
// Works from the files alone (no model is built): every tensor of the base
// checkpoint is copied, and each adapted weight becomes
// W + scale · B·A, computed in fp32 from the checkpoint's own values and
// rounded once to the output dtype.
#ifndef FJORD_LORA_EXPORT_H_
#define FJORD_LORA_EXPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "runtime/util/env.h"

namespace fjord::lora {

struct ExportOptions {
  // "auto" (default): every tensor keeps the base checkpoint's dtype;
  // "float32" | "bfloat16" | "float16": every float tensor is converted and
  // config.json's torch_dtype/dtype are set to it.
  std::string dtype = "auto";
  // Shard size limit (default 5 GiB), as transformers' max_shard_size.
  int64_t max_shard_bytes = int64_t{5} << 30;
};

// Reads base_dir (config.json, safetensors weights single or sharded) and
// adapter_dir (a PEFT LoRA adapter), writes out_dir (created): the merged
// weights (io::WriteModelDirTensors), config.json, and whichever of
// generation_config.json, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, tokenizer.model, vocab.json, merges.txt,
// added_tokens.json and chat_template.jinja base_dir has, copied.
// Errors: config.json's and the checkpoint's (NotFound, DataLoss, ...), the
// adapter's (LoraAdapter::FromPretrained's InvalidArgument cases);
// InvalidArgument for an unknown dtype; FailedPrecondition when the adapter
// changes lm_head while it shares the embedding matrix (tie_word_embeddings)
// or out_dir is base_dir; the Env's write errors.
absl::Status ExportMerged(const std::string& base_dir, const std::string& adapter_dir,
                          const std::string& out_dir, const ExportOptions& options = {},
                          Env* env = nullptr);

}  // namespace fjord::lora

#endif  // FJORD_LORA_EXPORT_H_
