#include "lora/peft_format.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora {
namespace {

using Json = nlohmann::ordered_json;

absl::Status FieldError(absl::string_view file, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": field '", field, "' ", what));
}

absl::Status Unsupported(absl::string_view file, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(file, ": field '", field, "' ", what, "; fjord loads plain LoRA adapters only"));
}

bool IsNullOrAbsent(const Json& j, const char* key) { return !j.contains(key) || j[key].is_null(); }

// An empty list/object counts as unset too (PEFT writes {} for loftq_config).
bool IsUnset(const Json& j, const char* key) {
  if (IsNullOrAbsent(j, key)) return true;
  const Json& v = j[key];
  return (v.is_array() || v.is_object() || v.is_string()) && v.empty();
}

absl::StatusOr<TargetModules> ParseTargets(const Json& v, absl::string_view file,
                                           absl::string_view field) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (absl::AsciiStrToLower(s) == "all-linear")
      return TargetModules::AllLinear();  // as PEFT: any case
    return TargetModules::Regex(s);
  }
  if (v.is_array()) {
    std::vector<std::string> names;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string())
        return FieldError(file, absl::StrCat(field, "[", i, "]"), "must be a string");
      names.push_back(v[i].get<std::string>());
    }
    return TargetModules::Names(std::move(names));
  }
  return FieldError(file, field,
                    "must be a string (a regex, or \"all-linear\") or a list of module names");
}

Json TargetsJson(const TargetModules& t, const std::vector<AdaptedModule>& adapted) {
  switch (t.kind) {
    case TargetModules::Kind::kNone:
      return nullptr;
    case TargetModules::Kind::kRegex:
      return t.regex;
    case TargetModules::Kind::kAllLinear:
      return LeafNames(adapted);
    case TargetModules::Kind::kNames:
      return t.names;  // sorted by TargetModules::Names
  }
  return nullptr;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<LoraConfig> ParseAdapterConfig(absl::string_view json_text, absl::string_view file) {
  Json j;
  try {
    j = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": not valid JSON (at byte ", e.byte, ")"));
  }
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(file, ": must be a JSON object"));

  // What kind of adapter this is.
  if (!j.contains("peft_type") || !j["peft_type"].is_string()) {
    return FieldError(file, "peft_type", "is missing or not a string (expected \"LORA\")");
  }
  if (j["peft_type"].get<std::string>() != "LORA") {
    return Unsupported(file, "peft_type",
                       absl::StrCat("is \"", j["peft_type"].get<std::string>(), "\""));
  }
  if (!IsNullOrAbsent(j, "task_type")) {
    if (!j["task_type"].is_string())
      return FieldError(file, "task_type", "must be a string or null");
    const std::string task = j["task_type"].get<std::string>();
    if (task != "CAUSAL_LM")
      return Unsupported(file, "task_type", absl::StrCat("is \"", task, "\" (expected CAUSAL_LM)"));
  }
  auto flag = [&](const char* key) -> absl::StatusOr<bool> {
    if (IsNullOrAbsent(j, key)) return false;
    if (!j[key].is_boolean()) return FieldError(file, key, "must be true or false");
    return j[key].get<bool>();
  };
  for (const char* key : {"use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"}) {
    FJORD_ASSIGN_OR_RETURN(bool on, flag(key));
    if (on) {
      const char* what = std::string(key) == "use_dora" ? "is true (DoRA adapters)"
                         : std::string(key) == "fan_in_fan_out"
                             ? "is true (Conv1D-style transposed weights)"
                         : std::string(key) == "lora_bias" ? "is true (a trained bias on lora_B)"
                                                           : "is true (QALoRA)";
      return Unsupported(file, key, what);
    }
  }
  if (!IsNullOrAbsent(j, "bias")) {
    if (!j["bias"].is_string()) return FieldError(file, "bias", "must be a string");
    const std::string bias = j["bias"].get<std::string>();
    if (bias != "none")
      return Unsupported(file, "bias", absl::StrCat("is \"", bias, "\" (trained biases)"));
  }
  for (const char* key : {"modules_to_save", "layer_replication", "trainable_token_indices",
                          "target_parameters", "alora_invocation_tokens"}) {
    if (!IsUnset(j, key)) return Unsupported(file, key, "is set");
  }

  LoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer())
    return FieldError(file, "r", "is missing or not an integer");
  c.r = j["r"].get<int64_t>();
  if (j.contains("lora_alpha") && !j["lora_alpha"].is_null()) {
    if (!j["lora_alpha"].is_number()) return FieldError(file, "lora_alpha", "must be a number");
    c.alpha = j["lora_alpha"].get<double>();
  } else {
    c.alpha = 8;  // PEFT's default
  }
  if (!IsNullOrAbsent(j, "lora_dropout")) {
    if (!j["lora_dropout"].is_number()) return FieldError(file, "lora_dropout", "must be a number");
    c.dropout = j["lora_dropout"].get<double>();
  }
  FJORD_ASSIGN_OR_RETURN(c.use_rslora, flag("use_rslora"));
  if (IsNullOrAbsent(j, "target_modules")) {
    c.target_modules = TargetModules::Names({"q_proj", "v_proj"});  // PEFT's Llama/Qwen2 default
  } else {
    FJORD_ASSIGN_OR_RETURN(c.target_modules,
                           ParseTargets(j["target_modules"], file, "target_modules"));
  }
  if (!IsNullOrAbsent(j, "exclude_modules")) {
    FJORD_ASSIGN_OR_RETURN(c.exclude_modules,
                           ParseTargets(j["exclude_modules"], file, "exclude_modules"));
    if (c.exclude_modules.kind == TargetModules::Kind::kNames && c.exclude_modules.names.empty()) {
      c.exclude_modules = TargetModules::None();
    }
  }
  if (!IsNullOrAbsent(j, "layers_to_transform")) {
    const Json& v = j["layers_to_transform"];
    if (v.is_number_integer()) {
      c.layers_to_transform.push_back(v.get<int64_t>());
    } else if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_number_integer())
          return FieldError(file, absl::StrCat("layers_to_transform[", i, "]"),
                            "must be an integer");
        c.layers_to_transform.push_back(v[i].get<int64_t>());
      }
    } else {
      return FieldError(file, "layers_to_transform", "must be an integer or a list of integers");
    }
  }
  if (!IsNullOrAbsent(j, "layers_pattern")) {
    const Json& v = j["layers_pattern"];
    if (v.is_string()) {
      if (!v.get<std::string>().empty()) c.layers_pattern.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string())
          return FieldError(file, absl::StrCat("layers_pattern[", i, "]"), "must be a string");
        c.layers_pattern.push_back(v[i].get<std::string>());
      }
    } else {
      return FieldError(file, "layers_pattern", "must be a string or a list of strings");
    }
  }
  if (!IsNullOrAbsent(j, "rank_pattern")) {
    const Json& v = j["rank_pattern"];
    if (!v.is_object())
      return FieldError(file, "rank_pattern", "must be an object of pattern: rank");
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it.value().is_number_integer())
        return FieldError(file, absl::StrCat("rank_pattern.", it.key()), "must be an integer");
      c.rank_pattern.emplace_back(it.key(), it.value().get<int64_t>());
    }
  }
  if (!IsNullOrAbsent(j, "alpha_pattern")) {
    const Json& v = j["alpha_pattern"];
    if (!v.is_object())
      return FieldError(file, "alpha_pattern", "must be an object of pattern: alpha");
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it.value().is_number())
        return FieldError(file, absl::StrCat("alpha_pattern.", it.key()), "must be a number");
      c.alpha_pattern.emplace_back(it.key(), it.value().get<double>());
    }
  }
  if (!IsNullOrAbsent(j, "base_model_name_or_path")) {
    if (!j["base_model_name_or_path"].is_string())
      return FieldError(file, "base_model_name_or_path", "must be a string");
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  if (!IsNullOrAbsent(j, "revision")) {
    if (!j["revision"].is_string()) return FieldError(file, "revision", "must be a string");
    c.revision = j["revision"].get<std::string>();
  }
  if (absl::Status s = c.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", s.message()));
  }
  return c;
}

std::string AdapterConfigJson(const LoraConfig& c, const std::vector<AdaptedModule>& adapted) {
  auto number = [](double v) -> Json {
    if (std::floor(v) == v && std::fabs(v) < 1e15) return static_cast<int64_t>(v);
    return v;
  };
  // Patterns keep their order (the first match wins); PEFT's own writer sorts
  // them, which can change which one wins when they overlap.
  Json rank = Json::object();
  for (const auto& [k, v] : c.rank_pattern) rank[k] = v;
  Json alpha = Json::object();
  for (const auto& [k, v] : c.alpha_pattern) alpha[k] = number(v);
  // Top-level keys in sorted order, as PEFT's json.dumps(sort_keys=True).
  Json j = Json::object();
  j["alpha_pattern"] = alpha;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] =
      c.base_model_name_or_path.empty() ? Json(nullptr) : Json(c.base_model_name_or_path);
  j["bias"] = "none";
  if (c.exclude_modules.kind != TargetModules::Kind::kNone) {
    j["exclude_modules"] = TargetsJson(c.exclude_modules, adapted);
  }
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layer_replication"] = nullptr;
  j["layers_pattern"] = c.layers_pattern.empty() ? Json(nullptr) : Json(c.layers_pattern);
  j["layers_to_transform"] =
      c.layers_to_transform.empty() ? Json(nullptr) : Json(c.layers_to_transform);
  j["loftq_config"] = Json::object();
  j["lora_alpha"] = number(c.alpha);
  j["lora_dropout"] = c.dropout;
  j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = c.r;
  j["rank_pattern"] = rank;
  j["revision"] = c.revision ? Json(*c.revision) : Json(nullptr);
  j["target_modules"] = TargetsJson(c.target_modules, adapted);
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = c.use_rslora;
  return j.dump(2) + "\n";
}

std::string LoraAKey(absl::string_view module_path) {
  return absl::StrCat("base_model.model.", module_path, ".lora_A.weight");
}

std::string LoraBKey(absl::string_view module_path) {
  return absl::StrCat("base_model.model.", module_path, ".lora_B.weight");
}

std::string BaseLayerCopyKey(absl::string_view module_path) {
  return absl::StrCat("base_model.model.", module_path, ".base_layer.weight");
}

std::vector<size_t> BaseLayerCopies(const io::SafetensorsHeader& header,
                                    const std::vector<AdaptedModule>& adapted) {
  std::set<std::string> names;
  for (const io::TensorEntry& t : header.tensors) names.insert(t.name);
  std::vector<size_t> out;
  for (size_t i = 0; i < adapted.size(); ++i) {
    if (names.count(BaseLayerCopyKey(adapted[i].path))) out.push_back(i);
  }
  return out;
}

absl::Status CheckAdapterTensors(const io::SafetensorsHeader& header,
                                 const std::vector<AdaptedModule>& adapted,
                                 absl::string_view file) {
  struct Expected {
    std::vector<int64_t> shape;
    const AdaptedModule* module;
    bool is_a;
  };
  std::map<std::string, Expected> expected;
  std::map<std::string, const AdaptedModule*> copies;  // optional
  for (const AdaptedModule& m : adapted) {
    expected[LoraAKey(m.path)] = {{m.r, m.in_features}, &m, true};
    expected[LoraBKey(m.path)] = {{m.out_features, m.r}, &m, false};
    copies[BaseLayerCopyKey(m.path)] = &m;
  }
  std::vector<std::string> extra;
  std::set<std::string> seen;
  for (const io::TensorEntry& t : header.tensors) {
    if (auto c = copies.find(t.name); c != copies.end()) {
      const std::vector<int64_t> want = {c->second->out_features, c->second->in_features};
      if (t.shape != want) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": tensor '", t.name, "' has shape ", ShapeString(t.shape),
                         ", expected ", ShapeString(want), " (the base model's ", c->second->path,
                         " weight, which it copies)"));
      }
      if (t.dtype != "F32" && t.dtype != "BF16" && t.dtype != "F16" && t.dtype != "F64") {
        return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", t.name, "' has dtype ",
                                                       t.dtype, ", expected a float type"));
      }
      continue;
    }
    auto it = expected.find(t.name);
    if (it == expected.end()) {
      extra.push_back(t.name);
      continue;
    }
    seen.insert(t.name);
    const Expected& e = it->second;
    if (t.shape != e.shape) {
      const bool rank_mismatch =
          t.shape.size() == 2 && (e.is_a ? t.shape[1] == e.shape[1] : t.shape[0] == e.shape[0]);
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": tensor '", t.name, "' has shape ", ShapeString(t.shape), ", expected ",
          ShapeString(e.shape),
          rank_mismatch
              ? absl::StrCat(" (rank ", e.module->r, " from adapter_config.json)")
              : absl::StrCat(" (", e.is_a ? "(r, in_features)" : "(out_features, r)",
                             " of the base model's ", e.module->path, ", r = ", e.module->r, ")")));
    }
    if (t.dtype != "F32" && t.dtype != "BF16" && t.dtype != "F16" && t.dtype != "F64") {
      return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", t.name, "' has dtype ",
                                                     t.dtype, ", expected a float type"));
    }
  }
  if (!extra.empty()) {
    std::sort(extra.begin(), extra.end());
    std::string hint;
    for (const std::string& name : extra) {
      if (absl::StrContains(name, "lora_magnitude_vector")) {
        hint = " (DoRA magnitude vectors: DoRA adapters are not supported)";
      } else if (absl::StrContains(name, "lora_embedding_")) {
        hint = " (adapters on embeddings are not supported)";
      } else if (absl::StrContains(name, ".lora_A.") || absl::StrContains(name, ".lora_B.")) {
        if (hint.empty())
          hint =
              " (LoRA weights for modules adapter_config.json does not target, or keys with an "
              "adapter name infix)";
      } else if (absl::EndsWith(name, ".bias")) {
        if (hint.empty()) hint = " (trained biases are not supported)";
      }
    }
    std::vector<std::string> shown(extra.begin(),
                                   extra.begin() + std::min<size_t>(extra.size(), 5));
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": ", extra.size(), " unexpected tensor(s) the adapter config does not account for: ",
        absl::StrJoin(shown, ", "), extra.size() > 5 ? ", ..." : "", hint));
  }
  if (seen.size() != expected.size()) {
    std::vector<std::string> missing;
    for (const auto& [name, e] : expected) {
      if (!seen.count(name)) missing.push_back(name);
    }
    std::vector<std::string> shown(missing.begin(),
                                   missing.begin() + std::min<size_t>(missing.size(), 5));
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": missing ", missing.size(), " tensor(s) adapter_config.json requires: ",
        absl::StrJoin(shown, ", "), missing.size() > 5 ? ", ..." : ""));
  }
  return absl::OkStatus();
}

std::vector<ModuleInfo> DecoderModules(int64_t num_layers, int64_t hidden, int64_t q_size,
                                       int64_t kv_size, int64_t intermediate, int64_t vocab,
                                       bool fused) {
  std::vector<ModuleInfo> out;
  for (int64_t l = 0; l < num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l);
    if (fused) {
      out.push_back({p + ".self_attn.qkv_proj", hidden, q_size + 2 * kv_size, false});
      out.push_back({p + ".self_attn.o_proj", q_size, hidden, false});
      out.push_back({p + ".mlp.gate_up_proj", hidden, 2 * intermediate, false});
      out.push_back({p + ".mlp.down_proj", intermediate, hidden, false});
      continue;
    }
    out.push_back({p + ".self_attn.q_proj", hidden, q_size, false});
    out.push_back({p + ".self_attn.k_proj", hidden, kv_size, false});
    out.push_back({p + ".self_attn.v_proj", hidden, kv_size, false});
    out.push_back({p + ".self_attn.o_proj", q_size, hidden, false});
    out.push_back({p + ".mlp.gate_proj", hidden, intermediate, false});
    out.push_back({p + ".mlp.up_proj", hidden, intermediate, false});
    out.push_back({p + ".mlp.down_proj", intermediate, hidden, false});
  }
  out.push_back({"lm_head", hidden, vocab, true});
  return out;
}

}  // namespace fjord::lora
