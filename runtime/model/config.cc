#include "runtime/model/config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/model/config_json.h"
#include "runtime/util/status_macros.h"

namespace fjord::model {
namespace {

using config_internal::FieldError;
using config_internal::Find;
using config_internal::GetBool;
using config_internal::GetDouble;
using config_internal::GetInt;
using config_internal::GetSingleTokenId;
using config_internal::GetString;
using config_internal::GetTokenIds;
using config_internal::Json;
using config_internal::ParseGemma3;
using config_internal::ParseRope;
using config_internal::RequireInt;
using config_internal::Show;

constexpr char kLlamaArch[] = "LlamaForCausalLM";
constexpr char kQwen2Arch[] = "Qwen2ForCausalLM";
constexpr char kQwen3Arch[] = "Qwen3ForCausalLM";
constexpr char kMistralArch[] = "MistralForCausalLM";
constexpr char kPhi3Arch[] = "Phi3ForCausalLM";
constexpr char kGemma3Arch[] = "Gemma3ForCausalLM";

// Each supported family: its architecture and model_type names.
struct FamilyName {
  ModelFamily family;
  const char* architecture;
  const char* model_type;
};
constexpr FamilyName kFamilies[] = {
    {ModelFamily::kLlama, kLlamaArch, "llama"}, {ModelFamily::kQwen2, kQwen2Arch, "qwen2"},
    {ModelFamily::kQwen3, kQwen3Arch, "qwen3"}, {ModelFamily::kMistral, kMistralArch, "mistral"},
    {ModelFamily::kPhi3, kPhi3Arch, "phi3"},    {ModelFamily::kGemma3, kGemma3Arch, "gemma3_text"}};

const FamilyName& NamesOf(ModelFamily f) {
  for (const FamilyName& n : kFamilies) {
    if (n.family == f) return n;
  }
  return kFamilies[0];
}

// Sets family/architecture/model_type from "architectures" and "model_type".
absl::Status ParseArchitecture(const Json& root, ModelConfig& c) {
  std::optional<ModelFamily> from_arch;
  if (const Json* archs = Find(root, "architectures")) {
    if (!archs->is_array() || archs->empty()) {
      return FieldError("architectures",
                        absl::StrCat("must be a non-empty list of strings, got ", Show(*archs)));
    }
    std::vector<std::string> names;
    for (const Json& a : *archs) {
      if (!a.is_string()) {
        return FieldError("architectures",
                          absl::StrCat("must be a list of strings, got ", Show(*archs)));
      }
      names.push_back(a.get<std::string>());
    }
    for (const std::string& n : names) {
      for (const FamilyName& f : kFamilies) {
        if (n == f.architecture) from_arch = f.family;
      }
      if (from_arch.has_value()) break;
    }
    if (!from_arch.has_value()) {
      return FieldError("architectures",
                        absl::StrCat("architecture '", absl::StrJoin(names, "', '"),
                                     "' is not supported; supported: ", kLlamaArch, ", ",
                                     kQwen2Arch, ", ", kQwen3Arch, ", ", kMistralArch, ", ",
                                     kPhi3Arch, ", ", kGemma3Arch, " (text only)"));
    }
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> model_type,
                         GetString(root, "model_type", "model_type"));
  std::optional<ModelFamily> from_type;
  if (model_type.has_value()) {
    for (const FamilyName& f : kFamilies) {
      if (*model_type == f.model_type) from_type = f.family;
    }
    if (!from_type.has_value()) {
      return FieldError(
          "model_type",
          absl::StrCat("model type '", *model_type,
                       "' is not supported; supported: llama, qwen2, qwen3, mistral, phi3, "
                       "gemma3_text"));
    }
  }
  if (!from_arch.has_value() && !from_type.has_value()) {
    return FieldError("architectures", "is required (or 'model_type')");
  }
  if (from_arch.has_value() && from_type.has_value() && *from_arch != *from_type) {
    return FieldError("model_type",
                      absl::StrCat("'", *model_type, "' does not match architectures (",
                                   NamesOf(*from_arch).architecture, ")"));
  }
  c.family = from_arch.has_value() ? *from_arch : *from_type;
  c.architecture = NamesOf(c.family).architecture;
  c.model_type = NamesOf(c.family).model_type;
  return absl::OkStatus();
}

// "quantization_config": only bitsandbytes' 4-bit NF4 is read (QLoRA).
absl::Status ParseQuantization(const Json& q, ModelConfig& c) {
  if (!q.is_object()) {
    return FieldError("quantization_config", absl::StrCat("must be an object, got ", Show(q)));
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> method,
                         GetString(q, "quant_method", "quantization_config.quant_method"));
  const std::string m = method.value_or("");
  if (m != "bitsandbytes") {
    return FieldError("quantization_config.quant_method",
                      absl::StrCat("'", m.empty() ? "(none)" : m,
                                   "' checkpoints are not supported; fjord reads full-precision "
                                   "checkpoints and bitsandbytes' 4-bit nf4 ones (QLoRA), and "
                                   "quantizes a full-precision base itself with "
                                   "model.quantization: nf4"));
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<bool> four, GetBool(q, "load_in_4bit"));
  FJORD_ASSIGN_OR_RETURN(std::optional<bool> eight, GetBool(q, "load_in_8bit"));
  if (eight.value_or(false) || !four.value_or(false)) {
    return FieldError("quantization_config.load_in_4bit",
                      "bitsandbytes 8-bit checkpoints are not supported (4-bit nf4 only)");
  }
  FJORD_ASSIGN_OR_RETURN(
      std::optional<std::string> type,
      GetString(q, "bnb_4bit_quant_type", "quantization_config.bnb_4bit_quant_type"));
  if (type.value_or("fp4") != "nf4") {
    return FieldError("quantization_config.bnb_4bit_quant_type",
                      absl::StrCat("'", type.value_or("fp4"),
                                   "' is not supported; fjord reads nf4 (QLoRA's 4-bit "
                                   "NormalFloat)"));
  }
  c.quantization = "bitsandbytes-nf4";
  if (const Json* skip = Find(q, "llm_int8_skip_modules")) {
    if (!skip->is_array()) {
      return FieldError("quantization_config.llm_int8_skip_modules", "must be a list or null");
    }
    for (const Json& s : *skip) {
      if (!s.is_string()) {
        return FieldError("quantization_config.llm_int8_skip_modules", "must list strings");
      }
      c.quantization_skip_modules.push_back(s.get<std::string>());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> Parse(const Json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("config must be a JSON object");
  ModelConfig c;
  FJORD_RETURN_IF_ERROR(ParseArchitecture(root, c));
  const bool llama = c.family == ModelFamily::kLlama;

  FJORD_ASSIGN_OR_RETURN(c.vocab_size, RequireInt(root, "vocab_size"));
  FJORD_ASSIGN_OR_RETURN(c.hidden_size, RequireInt(root, "hidden_size"));
  FJORD_ASSIGN_OR_RETURN(c.intermediate_size, RequireInt(root, "intermediate_size"));
  FJORD_ASSIGN_OR_RETURN(c.num_hidden_layers, RequireInt(root, "num_hidden_layers"));
  FJORD_ASSIGN_OR_RETURN(c.num_attention_heads, RequireInt(root, "num_attention_heads"));
  if (c.num_attention_heads <= 0) {
    return FieldError("num_attention_heads",
                      absl::StrCat("must be positive, got ", c.num_attention_heads));
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> kv,
                         GetInt(root, "num_key_value_heads", "num_key_value_heads"));
  c.num_key_value_heads = kv.value_or(c.num_attention_heads);
  FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, GetInt(root, "head_dim", "head_dim"));
  if (head_dim.has_value()) {
    c.head_dim = *head_dim;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return FieldError("head_dim", absl::StrCat("is absent and hidden_size ", c.hidden_size,
                                                 " is not divisible by num_attention_heads ",
                                                 c.num_attention_heads));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }

  FJORD_ASSIGN_OR_RETURN(std::optional<double> eps,
                         GetDouble(root, "rms_norm_eps", "rms_norm_eps"));
  if (eps.has_value()) c.rms_norm_eps = *eps;
  c.max_position_embeddings = llama                               ? 2048
                              : c.family == ModelFamily::kMistral ? 131072
                              : c.family == ModelFamily::kGemma3  ? 131072
                              : c.family == ModelFamily::kPhi3    ? 4096
                                                                  : 32768;
  FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> max_pos,
                         GetInt(root, "max_position_embeddings", "max_position_embeddings"));
  if (max_pos.has_value()) c.max_position_embeddings = *max_pos;
  FJORD_RETURN_IF_ERROR(ParseRope(root, c));

  FJORD_ASSIGN_OR_RETURN(std::optional<bool> tie, GetBool(root, "tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(c.family == ModelFamily::kGemma3);
  FJORD_ASSIGN_OR_RETURN(std::optional<double> dropout,
                         GetDouble(root, "attention_dropout", "attention_dropout"));
  c.attention_dropout = dropout.value_or(0.0);

  // Gemma names it hidden_activation (and its v4 configs carry a stale
  // hidden_act as well, which transformers ignores).
  const std::string act_key = c.family == ModelFamily::kGemma3 && root.contains("hidden_activation")
                                  ? "hidden_activation"
                                  : "hidden_act";
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> act, GetString(root, act_key, act_key));
  if (c.family == ModelFamily::kGemma3) {
    if (act.value_or("gelu_pytorch_tanh") != "gelu_pytorch_tanh") {
      return FieldError(act_key, absl::StrCat("activation '", *act,
                                              "' is not supported for Gemma 3; supported: "
                                              "gelu_pytorch_tanh"));
    }
    c.gelu_mlp = true;
  } else if (act.has_value() && *act != "silu" && *act != "swish") {
    return FieldError("hidden_act",
                      absl::StrCat("activation '", *act, "' is not supported; supported: silu"));
  }

  FJORD_ASSIGN_OR_RETURN(std::optional<bool> attention_bias, GetBool(root, "attention_bias"));
  FJORD_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, GetBool(root, "mlp_bias"));
  if (llama) {
    c.qkv_bias = attention_bias.value_or(false);
    c.o_proj_bias = c.qkv_bias;
    c.mlp_bias = mlp_bias.value_or(false);
  } else if (c.family == ModelFamily::kMistral || c.family == ModelFamily::kPhi3) {
    // Mistral's and Phi3's modeling code have no biases (Phi3's attention_bias
    // and mlp_bias fields are false in every release and unused by
    // transformers' Phi3 code).
    c.qkv_bias = c.o_proj_bias = c.mlp_bias = false;
    c.fused_projections = c.family == ModelFamily::kPhi3;
    if (c.family == ModelFamily::kPhi3) {
      // Dropout on the residual branches and the embeddings (0 in every
      // release): fjord applies none, so a model that asks for it is refused.
      for (const char* key : {"resid_pdrop", "embd_pdrop"}) {
        FJORD_ASSIGN_OR_RETURN(std::optional<double> p, GetDouble(root, key, key));
        if (p.value_or(0.0) != 0.0) {
          return FieldError(key, absl::StrCat("dropout ", *p, " is not supported (only 0)"));
        }
      }
    }
    if (const Json* w = Find(root, "sliding_window"); w != nullptr && !w->is_null()) {
      FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> window,
                             GetInt(root, "sliding_window", "sliding_window"));
      if (window.has_value() && *window <= 0) {
        return FieldError(
            "sliding_window",
            absl::StrCat("must be a positive number of tokens or null, got ", *window));
      }
      c.sliding_window = window.value_or(0);
    }
  } else if (c.family == ModelFamily::kGemma3) {
    FJORD_RETURN_IF_ERROR(ParseGemma3(root, attention_bias.value_or(false), c));
  } else if (c.family == ModelFamily::kQwen3) {
    // Qwen3's attention_bias covers q, k, v and o alike; its MLP has none.
    c.qkv_bias = attention_bias.value_or(false);
    c.o_proj_bias = c.qkv_bias;
    c.mlp_bias = false;
    c.qk_norm = true;
  } else {
    // Qwen2's modeling code hard-codes its biases and ignores these fields.
    c.qkv_bias = true;
    c.o_proj_bias = false;
    c.mlp_bias = false;
  }
  if (c.family == ModelFamily::kQwen2 || c.family == ModelFamily::kQwen3) {
    FJORD_ASSIGN_OR_RETURN(std::optional<bool> sliding, GetBool(root, "use_sliding_window"));
    if (sliding.value_or(false)) {
      return FieldError("use_sliding_window", "sliding-window attention is not supported");
    }
    if (const Json* types = Find(root, "layer_types")) {
      if (!types->is_array()) {
        return FieldError("layer_types", absl::StrCat("must be a list, got ", Show(*types)));
      }
      for (size_t i = 0; i < types->size(); ++i) {
        const Json& t = (*types)[i];
        if (!t.is_string() || t.get<std::string>() != "full_attention") {
          return FieldError(absl::StrCat("layer_types[", i, "]"),
                            absl::StrCat("only \"full_attention\" is supported, got ", Show(t)));
        }
      }
    }
  }

  std::string dtype_key = "dtype";
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> dtype, GetString(root, "dtype", "dtype"));
  if (!dtype.has_value()) {
    dtype_key = "torch_dtype";
    FJORD_ASSIGN_OR_RETURN(dtype, GetString(root, "torch_dtype", "torch_dtype"));
  }
  if (dtype.has_value()) {
    if (*dtype != "float32" && *dtype != "bfloat16" && *dtype != "float16") {
      return FieldError(dtype_key, absl::StrCat("dtype '", *dtype,
                                                "' is not supported; supported: float32, "
                                                "bfloat16, float16"));
    }
    c.dtype = *dtype;
  }

  if (const Json* q = Find(root, "quantization_config")) {
    FJORD_RETURN_IF_ERROR(ParseQuantization(*q, c));
  }

  FJORD_ASSIGN_OR_RETURN(c.bos_token_id, GetSingleTokenId(root, "bos_token_id"));
  FJORD_ASSIGN_OR_RETURN(c.eos_token_ids, GetTokenIds(root, "eos_token_id"));
  FJORD_ASSIGN_OR_RETURN(c.pad_token_id, GetSingleTokenId(root, "pad_token_id"));

  FJORD_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace

ModelConfig::ParameterCount ModelConfig::CountParameters() const {
  ParameterCount n;
  const int64_t h = hidden_size, q = q_size(), kv = kv_size(), i = intermediate_size;
  n.decoder_linear = num_hidden_layers * (2 * h * q + 2 * h * kv + 3 * h * i);
  const int64_t biases =
      (qkv_bias ? q + 2 * kv : 0) + (o_proj_bias ? h : 0) + (mlp_bias ? 2 * i + h : 0);
  const int64_t head_norms = qk_norm ? 2 * head_dim : 0;
  const int64_t layer_norms = gemma_norms ? 4 * h : 2 * h;  // Gemma: pre/post feedforward too
  n.other = vocab_size * h * (tie_word_embeddings ? 1 : 2) +
            num_hidden_layers * (layer_norms + biases + head_norms) + h;
  return n;
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](absl::string_view field, int64_t v) -> absl::Status {
    if (v <= 0) return FieldError(field, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  FJORD_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  FJORD_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  FJORD_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  FJORD_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers));
  FJORD_RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  FJORD_RETURN_IF_ERROR(positive("num_key_value_heads", num_key_value_heads));
  FJORD_RETURN_IF_ERROR(positive("head_dim", head_dim));
  FJORD_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  if (num_attention_heads % num_key_value_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat(num_key_value_heads, " does not divide num_attention_heads ",
                                   num_attention_heads));
  }
  if (head_dim % 2 != 0) {
    return FieldError("head_dim",
                      absl::StrCat("must be even for rotary embeddings, got ", head_dim));
  }
  if (!(rms_norm_eps > 0.0) || !std::isfinite(rms_norm_eps)) {
    return FieldError("rms_norm_eps", absl::StrCat("must be positive, got ", rms_norm_eps));
  }
  if (!(rope_theta > 0.0) || !std::isfinite(rope_theta)) {
    return FieldError("rope_theta", absl::StrCat("must be positive, got ", rope_theta));
  }
  if (!(attention_dropout >= 0.0 && attention_dropout < 1.0)) {
    return FieldError("attention_dropout",
                      absl::StrCat("must be in [0, 1), got ", attention_dropout));
  }
  const RopeScaling& s = rope_scaling;
  if (s.type != RopeType::kDefault && s.type != RopeType::kLongRope &&
      !(s.factor > 0.0 && std::isfinite(s.factor))) {
    return FieldError("rope_parameters.factor", absl::StrCat("must be positive, got ", s.factor));
  }
  if (s.type == RopeType::kLlama3) {
    if (!(s.low_freq_factor > 0.0)) {
      return FieldError("rope_parameters.low_freq_factor",
                        absl::StrCat("must be positive, got ", s.low_freq_factor));
    }
    if (!(s.high_freq_factor > s.low_freq_factor)) {
      return FieldError("rope_parameters.high_freq_factor",
                        absl::StrCat("must exceed low_freq_factor ", s.low_freq_factor, ", got ",
                                     s.high_freq_factor));
    }
    if (s.original_max_position_embeddings <= 0) {
      return FieldError("rope_parameters.original_max_position_embeddings",
                        absl::StrCat("must be positive, got ", s.original_max_position_embeddings));
    }
  }
  if (family == ModelFamily::kQwen2 && (!qkv_bias || o_proj_bias || mlp_bias)) {
    return FieldError("attention_bias", "Qwen2 has q/k/v biases and no o_proj or MLP biases");
  }
  if ((family == ModelFamily::kLlama || family == ModelFamily::kQwen3 ||
       family == ModelFamily::kGemma3) &&
      qkv_bias != o_proj_bias) {
    return FieldError("attention_bias", "attention_bias covers q, k, v and o_proj alike");
  }
  if (qk_norm != (family == ModelFamily::kQwen3 || family == ModelFamily::kGemma3)) {
    return FieldError("architectures",
                      "q_norm and k_norm belong to Qwen3 and Gemma 3, and they have them");
  }
  const bool gemma = family == ModelFamily::kGemma3;
  if (gemma_norms != gemma || gelu_mlp != gemma || (embedding_scale != 0.0) != gemma ||
      (query_pre_attn_scalar != 0.0) != gemma || (local_rope_theta != 0.0) != gemma ||
      (final_logit_softcapping != 0.0 && !gemma)) {
    return FieldError("architectures",
                      "(1 + w) norms, GeGLU, scaled embeddings, query_pre_attn_scalar, a local "
                      "RoPE base and logit soft-capping belong to Gemma 3");
  }
  if (gemma && (mlp_bias || !(query_pre_attn_scalar > 0.0) || !(embedding_scale > 0.0) ||
                !(local_rope_theta > 0.0) || final_logit_softcapping < 0.0)) {
    return FieldError("query_pre_attn_scalar",
                      "Gemma 3 needs a positive query_pre_attn_scalar, embedding scale and "
                      "local RoPE base, and no MLP bias");
  }
  if (!sliding_layers.empty() && static_cast<int64_t>(sliding_layers.size()) != num_hidden_layers) {
    return FieldError("layer_types",
                      absl::StrCat("must list one type per layer (", num_hidden_layers, "), got ",
                                   sliding_layers.size()));
  }
  if (family == ModelFamily::kQwen3 && mlp_bias) {
    return FieldError("mlp_bias", "Qwen3's MLP has no biases");
  }
  if (family == ModelFamily::kMistral && (qkv_bias || o_proj_bias || mlp_bias)) {
    return FieldError("attention_bias", "Mistral has no biases");
  }
  if (sliding_window < 0 || (sliding_window > 0 && family != ModelFamily::kMistral &&
                             family != ModelFamily::kPhi3 && family != ModelFamily::kGemma3)) {
    return FieldError("sliding_window",
                      absl::StrCat("a window of ", sliding_window,
                                   " tokens: only Mistral's, Phi3's and Gemma 3's sliding windows "
                                   "are supported"));
  }
  if (family == ModelFamily::kPhi3 && (qkv_bias || o_proj_bias || mlp_bias)) {
    return FieldError("attention_bias", "Phi3 has no biases");
  }
  if (fused_projections != (family == ModelFamily::kPhi3)) {
    return FieldError("architectures", "fused qkv_proj and gate_up_proj belong to Phi3");
  }
  const int64_t rot = rotary_dim();
  if (!(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) || rot <= 0 || rot % 2 != 0) {
    return FieldError("partial_rotary_factor",
                      absl::StrCat("must be in (0, 1] and turn an even number of dimensions, got ",
                                   partial_rotary_factor, " (", rot, " of ", head_dim, ")"));
  }
  if (s.type == RopeType::kLongRope) {
    for (const auto& [name, factors] :
         {std::pair<const char*, const std::vector<double>*>{"short_factor", &s.short_factor},
          {"long_factor", &s.long_factor}}) {
      if (static_cast<int64_t>(factors->size()) != rot / 2) {
        return FieldError(absl::StrCat("rope_parameters.", name),
                          absl::StrCat("must hold rotary_dim / 2 = ", rot / 2, " factors, got ",
                                       factors->size()));
      }
    }
    if (!(s.attention_factor > 0.0 && std::isfinite(s.attention_factor))) {
      return FieldError("rope_parameters.attention_factor",
                        absl::StrCat("must be positive, got ", s.attention_factor));
    }
    if (s.original_max_position_embeddings <= 0) {
      return FieldError("rope_parameters.original_max_position_embeddings",
                        absl::StrCat("must be positive, got ", s.original_max_position_embeddings));
    }
  }
  if (!dtype.empty() && dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
    return FieldError("dtype", absl::StrCat("dtype '", dtype, "' is not supported"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view json, absl::string_view name) {
  Json root;
  try {
    root = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": malformed JSON: ", e.what()));
  }
  absl::StatusOr<ModelConfig> c = Parse(root);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(name, ": ", c.status().message()));
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  FJORD_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(path));
  return FromJson(text, path);
}

std::string ModelConfig::ToJson() const {
  nlohmann::ordered_json j;
  const bool llama = family == ModelFamily::kLlama;
  j["architectures"] = {NamesOf(family).architecture};
  j["model_type"] = NamesOf(family).model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  if (gelu_mlp) {
    j["hidden_activation"] = "gelu_pytorch_tanh";
  } else {
    j["hidden_act"] = "silu";
  }
  j["rms_norm_eps"] = rms_norm_eps;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_dropout"] = attention_dropout;
  if (llama) {
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = mlp_bias;
  } else if (family == ModelFamily::kQwen3) {
    j["attention_bias"] = qkv_bias;
  } else if (family == ModelFamily::kGemma3) {
    j["attention_bias"] = qkv_bias;
    j["query_pre_attn_scalar"] = query_pre_attn_scalar;
    j["sliding_window"] = sliding_window > 0 ? nlohmann::ordered_json(sliding_window)
                                             : nlohmann::ordered_json(nullptr);
    nlohmann::ordered_json types = nlohmann::ordered_json::array();
    for (int64_t i = 0; i < num_hidden_layers; ++i) {
      types.push_back(sliding_layers.empty() || sliding_layers[static_cast<size_t>(i)]
                          ? "sliding_attention"
                          : "full_attention");
    }
    j["layer_types"] = types;
    j["final_logit_softcapping"] = final_logit_softcapping > 0
                                       ? nlohmann::ordered_json(final_logit_softcapping)
                                       : nlohmann::ordered_json(nullptr);
    j["attn_logit_softcapping"] = nullptr;
  } else if (family == ModelFamily::kMistral || family == ModelFamily::kPhi3) {
    j["sliding_window"] = sliding_window > 0 ? nlohmann::ordered_json(sliding_window)
                                             : nlohmann::ordered_json(nullptr);
  }
  nlohmann::ordered_json rope;
  rope["rope_theta"] = rope_theta;
  switch (rope_scaling.type) {
    case RopeType::kDefault:
      rope["rope_type"] = "default";
      break;
    case RopeType::kLinear:
      rope["rope_type"] = "linear";
      rope["factor"] = rope_scaling.factor;
      break;
    case RopeType::kLlama3:
      rope["rope_type"] = "llama3";
      rope["factor"] = rope_scaling.factor;
      rope["low_freq_factor"] = rope_scaling.low_freq_factor;
      rope["high_freq_factor"] = rope_scaling.high_freq_factor;
      rope["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
      break;
    case RopeType::kLongRope:
      rope["rope_type"] = "longrope";
      rope["short_factor"] = rope_scaling.short_factor;
      rope["long_factor"] = rope_scaling.long_factor;
      rope["attention_factor"] = rope_scaling.attention_factor;
      rope["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
      break;
  }
  if (partial_rotary_factor != 1.0) rope["partial_rotary_factor"] = partial_rotary_factor;
  if (family == ModelFamily::kGemma3) {
    j["rope_parameters"] = {
        {"full_attention", rope},
        {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", local_rope_theta}}}};
  } else {
    j["rope_parameters"] = rope;
  }
  if (family == ModelFamily::kPhi3 && rope_scaling.type == RopeType::kLongRope) {
    j["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
  }
  if (!dtype.empty()) j["dtype"] = dtype;
  j["bos_token_id"] = bos_token_id.has_value() ? nlohmann::ordered_json(*bos_token_id) : nullptr;
  if (eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  j["pad_token_id"] = pad_token_id.has_value() ? nlohmann::ordered_json(*pad_token_id) : nullptr;
  return j.dump(2);
}

}  // namespace fjord::model
