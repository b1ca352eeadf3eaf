// config.json's sections config.cc hands off (config_json.h): RoPE for every
// family (v4 and v5 forms, llama3, linear, LongRoPE, partial rotary, Gemma
// 3's per-layer-type sections) and Gemma 3's own fields.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/model/config_json.h"
#include "runtime/util/status_macros.h"

namespace fjord::model::config_internal {
namespace {

// partial_rotary_factor in `obj` (config.json's top level or its RoPE
// section): only Phi3 turns part of each head.
absl::Status ParsePartialRotary(const Json& obj, const std::string& name, ModelConfig& c) {
  FJORD_ASSIGN_OR_RETURN(std::optional<double> partial,
                         GetDouble(obj, "partial_rotary_factor", name));
  if (!partial.has_value()) return absl::OkStatus();
  if (c.family != ModelFamily::kPhi3 && *partial != 1.0) {
    return FieldError(name, absl::StrCat("partial rotary embeddings are supported for Phi3 only, "
                                         "got ",
                                         *partial));
  }
  c.partial_rotary_factor = *partial;
  return absl::OkStatus();
}

// A list of numbers (longrope's factors).
absl::StatusOr<std::vector<double>> RequireDoubles(const Json& obj, const std::string& key,
                                                   const std::string& name) {
  const Json* v = Find(obj, key);
  if (v == nullptr || !v->is_array()) {
    return FieldError(name, v == nullptr
                                ? "is required for rope type 'longrope'"
                                : absl::StrCat("must be a list of numbers, got ", Show(*v)));
  }
  std::vector<double> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& x = (*v)[i];
    if (!x.is_number() || !std::isfinite(x.get<double>()) || !(x.get<double>() > 0.0)) {
      return FieldError(absl::StrCat(name, "[", i, "]"),
                        absl::StrCat("must be a positive number, got ", Show(x)));
    }
    out.push_back(x.get<double>());
  }
  return out;
}

absl::Status ParseRopeSection(const Json& root, const Json& rp, const std::string& section,
                              ModelConfig& c);

}  // namespace

// RoPE from v5's "rope_parameters" or v4's "rope_theta" + "rope_scaling".
absl::Status ParseRope(const Json& root, ModelConfig& c) {
  FJORD_ASSIGN_OR_RETURN(std::optional<double> top_theta,
                         GetDouble(root, "rope_theta", "rope_theta"));
  if (top_theta.has_value()) c.rope_theta = *top_theta;
  FJORD_RETURN_IF_ERROR(ParsePartialRotary(root, "partial_rotary_factor", c));

  if (c.family == ModelFamily::kGemma3) {
    // v4: rope_theta for the global layers (1e6 by default), the local
    // layers' own base, and rope_scaling for the global layers only.
    c.rope_theta = top_theta.value_or(1000000.0);
    FJORD_ASSIGN_OR_RETURN(std::optional<double> local,
                           GetDouble(root, "rope_local_base_freq", "rope_local_base_freq"));
    c.local_rope_theta = local.value_or(10000.0);
  }

  std::string section = "rope_parameters";
  const Json* rp = Find(root, section);
  if (rp == nullptr) {
    section = "rope_scaling";
    rp = Find(root, section);
  }
  if (rp == nullptr) return absl::OkStatus();
  if (!rp->is_object()) {
    return FieldError(section, absl::StrCat("must be an object or null, got ", Show(*rp)));
  }
  if (c.family == ModelFamily::kGemma3 && section == "rope_parameters" &&
      (rp->contains("full_attention") || rp->contains("sliding_attention"))) {
    // v5: one section per layer type.
    for (const auto& [key, value] : rp->items()) {
      if (key != "full_attention" && key != "sliding_attention") {
        return FieldError(absl::StrCat(section, ".", key),
                          "Gemma 3 has full_attention and sliding_attention RoPE parameters only");
      }
      if (!value.is_null() && !value.is_object()) {
        return FieldError(absl::StrCat(section, ".", key),
                          absl::StrCat("must be an object, got ", Show(value)));
      }
    }
    if (const Json* local = Find(*rp, "sliding_attention")) {
      ModelConfig l = c;
      l.rope_theta = c.local_rope_theta;
      FJORD_RETURN_IF_ERROR(ParseRopeSection(root, *local, "rope_parameters.sliding_attention", l));
      if (l.rope_scaling.type != RopeType::kDefault) {
        return FieldError("rope_parameters.sliding_attention.rope_type",
                          "the local layers' RoPE must be 'default'");
      }
      c.local_rope_theta = l.rope_theta;
    }
    if (const Json* global = Find(*rp, "full_attention")) {
      return ParseRopeSection(root, *global, "rope_parameters.full_attention", c);
    }
    return absl::OkStatus();
  }
  for (const auto& [key, value] : rp->items()) {
    if (value.is_object()) {
      return FieldError(absl::StrCat(section, ".", key),
                        "per-layer-type RoPE parameters are not supported");
    }
  }
  return ParseRopeSection(root, *rp, section, c);
}

namespace {

// One RoPE section (rope_parameters, rope_scaling, or one layer type's) at
// `rp`, named `section` in errors.
absl::Status ParseRopeSection(const Json& root, const Json& rp_ref, const std::string& section,
                              ModelConfig& c) {
  const Json* rp = &rp_ref;
  auto field = [&](absl::string_view key) { return absl::StrCat(section, ".", key); };

  std::string type_key = "rope_type";
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> type,
                         GetString(*rp, "rope_type", field("rope_type")));
  if (!type.has_value()) {
    type_key = "type";
    FJORD_ASSIGN_OR_RETURN(type, GetString(*rp, "type", field("type")));
  }
  const std::string rope_type = type.value_or("default");

  FJORD_ASSIGN_OR_RETURN(std::optional<double> theta,
                         GetDouble(*rp, "rope_theta", field("rope_theta")));
  if (theta.has_value()) c.rope_theta = *theta;
  FJORD_RETURN_IF_ERROR(ParsePartialRotary(*rp, field("partial_rotary_factor"), c));

  auto require_double = [&](const std::string& key) -> absl::StatusOr<double> {
    FJORD_ASSIGN_OR_RETURN(std::optional<double> v, GetDouble(*rp, key, field(key)));
    if (!v.has_value()) {
      return FieldError(field(key), absl::StrCat("is required for rope type '", rope_type, "'"));
    }
    return *v;
  };

  RopeScaling& s = c.rope_scaling;
  if (rope_type == "default") {
    s.type = RopeType::kDefault;
  } else if (rope_type == "linear") {
    s.type = RopeType::kLinear;
    FJORD_ASSIGN_OR_RETURN(s.factor, require_double("factor"));
  } else if (rope_type == "llama3") {
    s.type = RopeType::kLlama3;
    FJORD_ASSIGN_OR_RETURN(s.factor, require_double("factor"));
    FJORD_ASSIGN_OR_RETURN(s.low_freq_factor, require_double("low_freq_factor"));
    FJORD_ASSIGN_OR_RETURN(s.high_freq_factor, require_double("high_freq_factor"));
    FJORD_ASSIGN_OR_RETURN(
        std::optional<int64_t> orig,
        GetInt(*rp, "original_max_position_embeddings", field("original_max_position_embeddings")));
    s.original_max_position_embeddings = orig.value_or(c.max_position_embeddings);
  } else if (rope_type == "longrope" || rope_type == "su") {
    s.type = RopeType::kLongRope;
    FJORD_ASSIGN_OR_RETURN(s.short_factor,
                           RequireDoubles(*rp, "short_factor", field("short_factor")));
    FJORD_ASSIGN_OR_RETURN(s.long_factor, RequireDoubles(*rp, "long_factor", field("long_factor")));
    // Phi3 keeps the pre-training length at the top level (v4), v5 in here.
    FJORD_ASSIGN_OR_RETURN(
        std::optional<int64_t> orig,
        GetInt(*rp, "original_max_position_embeddings", field("original_max_position_embeddings")));
    if (!orig.has_value()) {
      FJORD_ASSIGN_OR_RETURN(orig, GetInt(root, "original_max_position_embeddings",
                                          "original_max_position_embeddings"));
    }
    s.original_max_position_embeddings =
        orig.value_or(c.family == ModelFamily::kPhi3 ? 4096 : c.max_position_embeddings);
    if (s.original_max_position_embeddings <= 0) {
      return FieldError(field("original_max_position_embeddings"),
                        absl::StrCat("must be positive, got ", s.original_max_position_embeddings));
    }
    FJORD_ASSIGN_OR_RETURN(std::optional<double> factor, GetDouble(*rp, "factor", field("factor")));
    FJORD_ASSIGN_OR_RETURN(std::optional<double> attention_factor,
                           GetDouble(*rp, "attention_factor", field("attention_factor")));
    const double f = factor.value_or(static_cast<double>(c.max_position_embeddings) /
                                     static_cast<double>(s.original_max_position_embeddings));
    s.factor = factor.value_or(1.0);
    if (attention_factor.has_value()) {
      s.attention_factor = *attention_factor;
    } else {
      s.attention_factor =
          f <= 1.0 ? 1.0
                   : std::sqrt(1.0 + std::log(f) / std::log(static_cast<double>(
                                                       s.original_max_position_embeddings)));
    }
  } else {
    return FieldError(field(type_key), absl::StrCat("rope type '", rope_type,
                                                    "' is not supported; supported: default, "
                                                    "linear, llama3, longrope"));
  }
  return absl::OkStatus();
}

}  // namespace

// Gemma 3's fields past the common ones (c.head_dim and c.hidden_size are
// set).
absl::Status ParseGemma3(const Json& root, bool attention_bias, ModelConfig& c) {
  c.qkv_bias = c.o_proj_bias = attention_bias;
  c.mlp_bias = false;
  c.qk_norm = true;
  c.gemma_norms = true;
  c.embedding_scale = std::sqrt(static_cast<double>(c.hidden_size));
  FJORD_ASSIGN_OR_RETURN(std::optional<double> scalar,
                         GetDouble(root, "query_pre_attn_scalar", "query_pre_attn_scalar"));
  c.query_pre_attn_scalar = scalar.value_or(256.0);
  if (!(c.query_pre_attn_scalar > 0.0)) {
    return FieldError("query_pre_attn_scalar",
                      absl::StrCat("must be positive, got ", c.query_pre_attn_scalar));
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<double> cap,
                         GetDouble(root, "final_logit_softcapping", "final_logit_softcapping"));
  c.final_logit_softcapping = cap.value_or(0.0);
  if (c.final_logit_softcapping < 0.0) {
    return FieldError("final_logit_softcapping",
                      absl::StrCat("must be positive or null, got ", c.final_logit_softcapping));
  }
  if (Find(root, "attn_logit_softcapping") != nullptr) {
    return FieldError("attn_logit_softcapping",
                      "soft-capped attention scores are not supported (Gemma 3 has none: null)");
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<bool> bidirectional,
                         GetBool(root, "use_bidirectional_attention"));
  if (bidirectional.value_or(false)) {
    return FieldError("use_bidirectional_attention",
                      "bidirectional attention (an embedding model) is not supported");
  }
  // The window (4096 by default; null: none) and which layers use it.
  c.sliding_window = 4096;
  if (const Json* w = Find(root, "sliding_window");
      w != nullptr || root.contains("sliding_window")) {
    c.sliding_window = 0;
    if (w != nullptr) {
      FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> window,
                             GetInt(root, "sliding_window", "sliding_window"));
      if (window.value_or(0) <= 0) {
        return FieldError(
            "sliding_window",
            absl::StrCat("must be a positive number of tokens or null, got ", window.value_or(0)));
      }
      c.sliding_window = *window;
    }
  }
  c.sliding_layers.assign(static_cast<size_t>(c.num_hidden_layers), false);
  if (const Json* types = Find(root, "layer_types")) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != c.num_hidden_layers) {
      return FieldError("layer_types", absl::StrCat("must list one type per layer (",
                                                    c.num_hidden_layers, "), got ", Show(*types)));
    }
    for (size_t i = 0; i < types->size(); ++i) {
      const Json& t = (*types)[i];
      const std::string name = t.is_string() ? t.get<std::string>() : "";
      if (name != "sliding_attention" && name != "full_attention") {
        return FieldError(
            absl::StrCat("layer_types[", i, "]"),
            absl::StrCat("must be \"sliding_attention\" or \"full_attention\", got ", Show(t)));
      }
      c.sliding_layers[i] = name == "sliding_attention";
    }
  } else {
    // transformers' default: every sliding_window_pattern-th layer global.
    FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> pattern,
                           GetInt(root, "sliding_window_pattern", "sliding_window_pattern"));
    const int64_t every = pattern.value_or(6);
    if (every <= 0) {
      return FieldError("sliding_window_pattern", absl::StrCat("must be positive, got ", every));
    }
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      c.sliding_layers[static_cast<size_t>(i)] = (i + 1) % every != 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace fjord::model::config_internal
