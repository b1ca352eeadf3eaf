#include "lora/lora_config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora {
namespace {

// Keeps pathological patterns (catastrophic backtracking) bounded.
constexpr uint32_t kMatchLimit = 1'000'000;
constexpr uint32_t kDepthLimit = 10'000;

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* m) const { pcre2_match_context_free(m); }
};

// Matches `pattern` against `text` from its start; with `whole`, the match
// must also end at the end of `text`. Returns whether it matched and, when
// `group` is set, the text of that named group.
absl::StatusOr<bool> Match(absl::string_view pattern, absl::string_view text, bool whole,
                           const char* group = nullptr, std::string* group_text = nullptr) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  uint32_t options = PCRE2_ANCHORED | PCRE2_UTF;
  if (whole) options |= PCRE2_ENDANCHORED;
  std::unique_ptr<pcre2_code, CodeDeleter> code(
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                    &offset, nullptr));
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    return absl::InvalidArgumentError(absl::StrCat("regex '", pattern,
                                                   "' does not compile at offset ", offset, ": ",
                                                   reinterpret_cast<char*>(message)));
  }
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(code.get(), nullptr));
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> ctx(
      pcre2_match_context_create(nullptr));
  if (md == nullptr || ctx == nullptr) return absl::ResourceExhaustedError("regex: out of memory");
  pcre2_set_match_limit(ctx.get(), kMatchLimit);
  pcre2_set_depth_limit(ctx.get(), kDepthLimit);
  const int rc = pcre2_match(code.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                             0, md.get(), ctx.get());
  // No match, or a subject that is not UTF-8 (module paths never are).
  if (rc == PCRE2_ERROR_NOMATCH || (rc >= PCRE2_ERROR_UTF8_ERR21 && rc <= PCRE2_ERROR_UTF8_ERR1)) {
    return false;
  }
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof message);
    return absl::InvalidArgumentError(
        absl::StrCat("regex '", pattern, "' on '", text, "': ", reinterpret_cast<char*>(message)));
  }
  if (group != nullptr && group_text != nullptr) {
    PCRE2_UCHAR* buf = nullptr;
    PCRE2_SIZE len = 0;
    if (pcre2_substring_get_byname(md.get(), reinterpret_cast<PCRE2_SPTR>(group), &buf, &len) ==
        0) {
      group_text->assign(reinterpret_cast<char*>(buf), len);
      pcre2_substring_free(buf);
    } else {
      group_text->clear();
    }
  }
  return true;
}

// Python's re.escape is not needed: PEFT interpolates layers_pattern and
// pattern keys into its regexes as they are, and so does fjord.

// PEFT: the decoder-layer index of `path`, or nullopt.
absl::StatusOr<std::optional<int64_t>> LayerIndex(const LoraConfig& config,
                                                  const std::string& path) {
  std::string idx;
  bool matched = false;
  if (config.layers_pattern.empty()) {
    // The first numbered segment (lazy), as PEFT.
    FJORD_ASSIGN_OR_RETURN(matched,
                           Match(R"(.*?\.[^.]*\.(?P<idx>\d+)\.)", path, false, "idx", &idx));
  } else {
    for (const std::string& p : config.layers_pattern) {
      FJORD_ASSIGN_OR_RETURN(
          matched, Match(absl::StrCat(R"((?:^|.*?\.))", p, R"(\.(?P<idx>\d+)\.)"), path, false,
                         "idx", &idx));
      if (matched) break;
    }
  }
  if (!matched || idx.empty() || idx.size() > 12) return std::optional<int64_t>();
  return std::optional<int64_t>(std::stoll(idx));
}

// PEFT's check_target_module_exists for one TargetModules (no exclusions).
absl::StatusOr<bool> MatchesTargets(const LoraConfig& config, const TargetModules& t,
                                    const ModuleInfo& module, bool apply_layers) {
  switch (t.kind) {
    case TargetModules::Kind::kNone:
      return false;
    case TargetModules::Kind::kRegex:
      return Match(t.regex, module.path, /*whole=*/true);
    case TargetModules::Kind::kAllLinear:
    case TargetModules::Kind::kNames: {
      bool found = false;
      if (t.kind == TargetModules::Kind::kAllLinear) {
        if (module.is_output_head) return false;
        found = true;
      } else {
        if (std::find(t.names.begin(), t.names.end(), module.path) != t.names.end()) return true;
        for (const std::string& name : t.names) {
          if (absl::EndsWith(module.path, absl::StrCat(".", name))) found = true;
        }
      }
      if (!found || !apply_layers || config.layers_to_transform.empty()) return found;
      FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> layer, LayerIndex(config, module.path));
      if (!layer) return false;
      return std::find(config.layers_to_transform.begin(), config.layers_to_transform.end(),
                       *layer) != config.layers_to_transform.end();
    }
  }
  return false;
}

std::string Describe(const TargetModules& t) {
  switch (t.kind) {
    case TargetModules::Kind::kNone:
      return "none";
    case TargetModules::Kind::kRegex:
      return absl::StrCat("regex '", t.regex, "'");
    case TargetModules::Kind::kAllLinear:
      return "all-linear";
    case TargetModules::Kind::kNames:
      return absl::StrCat("[", absl::StrJoin(t.names, ", "), "]");
  }
  return "";
}

absl::Status ValidateTargets(const TargetModules& t, absl::string_view field) {
  if (t.kind == TargetModules::Kind::kNames) {
    if (t.names.empty())
      return absl::InvalidArgumentError(absl::StrCat(field, ": the list of module names is empty"));
    for (const std::string& n : t.names) {
      if (n.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty module name"));
    }
  }
  if (t.kind == TargetModules::Kind::kRegex) {
    if (t.regex.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty regex"));
    absl::StatusOr<bool> probe = Match(t.regex, "model.layers.0.self_attn.q_proj", true);
    if (!probe.ok())
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", probe.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace

TargetModules TargetModules::Names(std::vector<std::string> names) {
  TargetModules t;
  t.kind = Kind::kNames;
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  t.names = std::move(names);
  return t;
}

TargetModules TargetModules::Regex(std::string pattern) {
  TargetModules t;
  t.kind = Kind::kRegex;
  t.regex = std::move(pattern);
  return t;
}

TargetModules TargetModules::AllLinear() {
  TargetModules t;
  t.kind = Kind::kAllLinear;
  return t;
}

bool TargetModules::operator==(const TargetModules& o) const {
  return kind == o.kind && names == o.names && regex == o.regex;
}

bool LoraConfig::operator==(const LoraConfig& o) const {
  return r == o.r && alpha == o.alpha && dropout == o.dropout && use_rslora == o.use_rslora &&
         target_modules == o.target_modules && exclude_modules == o.exclude_modules &&
         layers_to_transform == o.layers_to_transform && layers_pattern == o.layers_pattern &&
         rank_pattern == o.rank_pattern && alpha_pattern == o.alpha_pattern &&
         base_model_name_or_path == o.base_model_name_or_path && revision == o.revision;
}

absl::Status LoraConfig::Validate() const {
  if (r < 1) return absl::InvalidArgumentError(absl::StrCat("field 'r': ", r, " must be >= 1"));
  if (!(alpha > 0) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'lora_alpha': ", alpha, " must be a positive number"));
  }
  if (!(dropout >= 0 && dropout < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'lora_dropout': ", dropout, " must be in [0, 1)"));
  }
  if (target_modules.kind == TargetModules::Kind::kNone) {
    return absl::InvalidArgumentError("field 'target_modules': no target modules");
  }
  FJORD_RETURN_IF_ERROR(ValidateTargets(target_modules, "field 'target_modules'"));
  FJORD_RETURN_IF_ERROR(ValidateTargets(exclude_modules, "field 'exclude_modules'"));
  if (exclude_modules.kind == TargetModules::Kind::kAllLinear) {
    return absl::InvalidArgumentError(
        "field 'exclude_modules': all-linear would exclude everything");
  }
  if (target_modules.kind == TargetModules::Kind::kRegex &&
      (!layers_to_transform.empty() || !layers_pattern.empty())) {
    return absl::InvalidArgumentError(
        "field 'layers_to_transform': cannot be used when target_modules is a regex (a single "
        "string); "
        "list module names instead, or put the layer numbers in the regex");
  }
  for (int64_t l : layers_to_transform) {
    if (l < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("field 'layers_to_transform': layer index ", l, " is negative"));
  }
  for (const std::string& p : layers_pattern) {
    if (p.empty()) return absl::InvalidArgumentError("field 'layers_pattern': empty pattern");
  }
  for (const auto& [key, value] : rank_pattern) {
    if (value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("field 'rank_pattern': '", key, "': rank ", value, " must be >= 1"));
    }
    absl::StatusOr<bool> ok = Match(absl::StrCat(R"((.*\.)?()", key, ")"), "x", true);
    if (!ok.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("field 'rank_pattern': ", ok.status().message()));
  }
  for (const auto& [key, value] : alpha_pattern) {
    if (!(value > 0) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("field 'alpha_pattern': '", key, "': alpha ", value, " must be positive"));
    }
    absl::StatusOr<bool> ok = Match(absl::StrCat(R"((.*\.)?()", key, ")"), "x", true);
    if (!ok.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("field 'alpha_pattern': ", ok.status().message()));
  }
  return absl::OkStatus();
}

double LoraScale(double alpha, int64_t r, bool use_rslora) {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

absl::StatusOr<bool> RegexFullMatch(absl::string_view pattern, absl::string_view text) {
  return Match(pattern, text, /*whole=*/true);
}

absl::StatusOr<bool> IsTargeted(const LoraConfig& config, const ModuleInfo& module) {
  // Exclusions first (PEFT: exclude_modules, with no layer filter).
  FJORD_ASSIGN_OR_RETURN(bool excluded,
                         MatchesTargets(config, config.exclude_modules, module, false));
  if (excluded) return false;
  return MatchesTargets(config, config.target_modules, module, /*apply_layers=*/true);
}

absl::StatusOr<std::vector<AdaptedModule>> ResolveTargets(const LoraConfig& config,
                                                          const std::vector<ModuleInfo>& modules) {
  FJORD_RETURN_IF_ERROR(config.Validate());
  std::vector<AdaptedModule> out;
  for (const ModuleInfo& m : modules) {
    FJORD_ASSIGN_OR_RETURN(bool targeted, IsTargeted(config, m));
    if (!targeted) continue;
    AdaptedModule a;
    a.path = m.path;
    a.in_features = m.in_features;
    a.out_features = m.out_features;
    a.r = config.r;
    a.alpha = config.alpha;
    for (const auto& [key, value] : config.rank_pattern) {
      FJORD_ASSIGN_OR_RETURN(bool hit, Match(absl::StrCat(R"((.*\.)?()", key, ")"), m.path, true));
      if (hit) {
        a.r = value;
        break;
      }
    }
    for (const auto& [key, value] : config.alpha_pattern) {
      FJORD_ASSIGN_OR_RETURN(bool hit, Match(absl::StrCat(R"((.*\.)?()", key, ")"), m.path, true));
      if (hit) {
        a.alpha = value;
        break;
      }
    }
    a.scale = LoraScale(a.alpha, a.r, config.use_rslora);
    out.push_back(std::move(a));
  }
  if (out.empty()) {
    std::vector<std::string> some;
    for (size_t i = 0; i < modules.size() && i < 8; ++i) some.push_back(modules[i].path);
    std::string layers;
    if (!config.layers_to_transform.empty()) {
      layers = absl::StrCat(" in layers [", absl::StrJoin(config.layers_to_transform, ", "), "]");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "target_modules ", Describe(config.target_modules), " matched no linear layer of the model",
        layers, " (", modules.size(), " linear layers, e.g. ", absl::StrJoin(some, ", "),
        modules.size() > some.size() ? ", ..." : "",
        "; a list names leaf modules like q_proj, a single string is a regex that must match the "
        "whole path)"));
  }
  return out;
}

std::vector<std::string> LeafNames(const std::vector<AdaptedModule>& adapted) {
  std::set<std::string> leaves;
  for (const AdaptedModule& a : adapted) {
    const size_t dot = a.path.rfind('.');
    leaves.insert(dot == std::string::npos ? a.path : a.path.substr(dot + 1));
  }
  return {leaves.begin(), leaves.end()};
}

}  // namespace fjord::lora
