// ExportMerged: base checkpoint + PEFT adapter -> merged HF checkpoint.
#include "lora/export.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <map>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lora/adapter.h"
#include "lora/lora_config.h"
#include "lora/peft_format.h"
#include "runtime/io/model_dir.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/config.h"
#include "runtime/quant/nf4.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::lora {
namespace {

constexpr const char* kCopiedFiles[] = {
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
};

bool IsFloat(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16 ||
         t == torch::kFloat64;
}

}  // namespace

absl::Status ExportMerged(const std::string& base_dir, const std::string& adapter_dir,
                          const std::string& out_dir, const ExportOptions& options, Env* env) {
  if (env == nullptr) env = Env::Default();
  std::optional<torch::ScalarType> out_dtype;
  if (options.dtype == "float32")
    out_dtype = torch::kFloat32;
  else if (options.dtype == "bfloat16")
    out_dtype = torch::kBFloat16;
  else if (options.dtype == "float16")
    out_dtype = torch::kFloat16;
  else if (options.dtype != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "export dtype '", options.dtype, "' is not one of auto, float32, bfloat16, float16"));
  }
  if (out_dir == base_dir) {
    return absl::FailedPreconditionError(absl::StrCat("export: the output directory ", out_dir,
                                                      " is the base model's; choose another"));
  }

  // The base model and which of its linear layers the adapter changes.
  const std::string config_path = JoinPath(base_dir, "config.json");
  FJORD_ASSIGN_OR_RETURN(std::string config_text, env->ReadFileToString(config_path));
  FJORD_ASSIGN_OR_RETURN(model::ModelConfig mc,
                         model::ModelConfig::FromJson(config_text, config_path));
  const std::vector<ModuleInfo> modules =
      DecoderModules(mc.num_hidden_layers, mc.hidden_size, mc.q_size(), mc.kv_size(),
                     mc.intermediate_size, mc.vocab_size, mc.fused_projections);
  const std::string adapter_config_path = JoinPath(adapter_dir, kAdapterConfigName);
  FJORD_ASSIGN_OR_RETURN(std::string adapter_text, env->ReadFileToString(adapter_config_path));
  FJORD_ASSIGN_OR_RETURN(LoraConfig lc, ParseAdapterConfig(adapter_text, adapter_config_path));
  absl::StatusOr<std::vector<AdaptedModule>> adapted = ResolveTargets(lc, modules);
  if (!adapted.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(adapter_config_path, ": ", adapted.status().message()));
  }
  const std::string weights_path = JoinPath(adapter_dir, kAdapterWeightsName);
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<io::SafetensorsFile> weights,
                         io::SafetensorsFile::Open(weights_path, env));
  FJORD_RETURN_IF_ERROR(CheckAdapterTensors(weights->header(), *adapted, weights_path));
  std::map<std::string, const AdaptedModule*> by_weight;
  for (const AdaptedModule& m : *adapted) {
    if (m.path == "lm_head" && mc.tie_word_embeddings) {
      return absl::FailedPreconditionError(
          absl::StrCat(adapter_dir,
                       ": the adapter changes lm_head, which shares its matrix with the embeddings "
                       "(tie_word_embeddings in ",
                       config_path, "): a merged checkpoint cannot hold both"));
    }
    by_weight[m.path + ".weight"] = &m;
  }

  // Every tensor of the base, merged where adapted.
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<io::ModelDirReader> reader,
                         io::ModelDirReader::Open(base_dir, env));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  // A base bitsandbytes saved in 4 bits: each 4-bit weight is dequantized
  // (to the dtype its quant_state records) and its state's tensors dropped,
  // so the output is a plain full-precision checkpoint.
  const bool base_4bit = mc.quantization == "bitsandbytes-nf4";
  auto is_4bit = [&](const std::string& name) {
    const io::TensorEntry* e = reader->Find(name);
    return base_4bit && e != nullptr && e->dtype == "U8" &&
           reader->Contains(name + ".quant_state.bitsandbytes__nf4");
  };
  auto is_4bit_part = [&](const std::string& name) {
    for (const std::string& suffix : quant::BitsandbytesSuffixes()) {
      if (absl::EndsWith(name, suffix) && is_4bit(name.substr(0, name.size() - suffix.size()))) {
        return true;
      }
    }
    return false;
  };
  for (const std::string& name : reader->Names()) {
    if (is_4bit_part(name)) continue;
    FJORD_ASSIGN_OR_RETURN(torch::Tensor t, reader->Get(name));
    if (is_4bit(name)) {
      absl::StatusOr<quant::Nf4Tensor> q = quant::ReadBitsandbytes(*reader, name);
      if (!q.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(base_dir, ": ", q.status().message()));
      }
      FJORD_ASSIGN_OR_RETURN(t, TorchCall(absl::StrCat(base_dir, ": dequantizing ", name),
                                          [&]() { return quant::DequantizeNf4(*q, q->dtype); }));
    }
    auto it = by_weight.find(name);
    if (it != by_weight.end() && weights->Find(BaseLayerCopyKey(it->second->path)) != nullptr) {
      const std::string key = BaseLayerCopyKey(it->second->path);
      FJORD_ASSIGN_OR_RETURN(torch::Tensor copy, weights->Get(key));
      FJORD_RETURN_IF_ERROR(CheckBaseLayerCopy(weights_path, key, copy, t));
    }
    FJORD_ASSIGN_OR_RETURN(
        torch::Tensor out, TorchCall(absl::StrCat(base_dir, ": merging ", name), [&]() {
          const torch::ScalarType dtype =
              out_dtype && IsFloat(t.scalar_type()) ? *out_dtype : t.scalar_type();
          if (it == by_weight.end()) return t.to(dtype);
          const AdaptedModule& m = *it->second;
          torch::NoGradGuard no_grad;
          torch::Tensor a = weights->Get(LoraAKey(m.path)).value().to(torch::kFloat32);  // (r, in)
          torch::Tensor b = weights->Get(LoraBKey(m.path)).value().to(torch::kFloat32);  // (out, r)
          return (t.to(torch::kFloat32) + torch::matmul(b, a) * m.scale).to(dtype);
        }));
    tensors.emplace_back(name, std::move(out));
  }
  for (const auto& [name, m] : by_weight) {
    if (!reader->Contains(name)) {
      return absl::NotFoundError(
          absl::StrCat(base_dir, ": checkpoint lacks ", name, ", which the adapter changes"));
    }
  }

  FJORD_RETURN_IF_ERROR(env->CreateDirs(out_dir));
  FJORD_RETURN_IF_ERROR(io::WriteModelDirTensors(out_dir, tensors, options.max_shard_bytes, env));
  tensors.clear();
  if (out_dtype || base_4bit) {
    nlohmann::ordered_json j =
        nlohmann::ordered_json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      if (out_dtype) {
        const std::string name = options.dtype;
        if (j.contains("dtype")) j["dtype"] = name;
        j["torch_dtype"] = name;
      }
      j.erase("quantization_config");  // the output is full precision
      config_text = j.dump(2) + "\n";
    }
  }
  FJORD_RETURN_IF_ERROR(env->WriteFileAtomic(JoinPath(out_dir, "config.json"), config_text));
  for (const char* file : kCopiedFiles) {
    const std::string from = JoinPath(base_dir, file);
    if (!env->FileExists(from)) continue;
    FJORD_ASSIGN_OR_RETURN(std::string bytes, env->ReadFileToString(from));
    FJORD_RETURN_IF_ERROR(env->WriteFileAtomic(JoinPath(out_dir, file), bytes));
  }
  return absl::OkStatus();
}

}  // namespace fjord::lora
