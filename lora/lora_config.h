// LoRA settings and which linear layers they adapt, with Hugging Face PEFT's
// semantics (peft.LoraConfig). Plain C++ (no LibTorch): the daemon, the
// adapter-file checks and the fuzzer use it too.
//
//   lora::LoraConfig config;
//   config.r = 16;
//   config.alpha = 32;
//   config.target_modules = lora::TargetModules::Names({"q_proj", "v_proj"});
//   FJORD_ASSIGN_OR_RETURN(std::vector<lora::AdaptedModule> adapted,
//                          lora::ResolveTargets(config, lora::ModulesOfModel(...)));
//
// Target matching, as PEFT's check_target_module_exists (module paths are
// those of the Hugging Face model, e.g. "model.layers.3.self_attn.q_proj"):
//  - Names: a module is targeted when its path equals a name, or ends with
//    "." + name. layers_to_transform (and layers_pattern) then keep only the
//    modules of those decoder layers, except that a name equal to the whole
//    path is taken regardless of the layer (as PEFT does).
//  - Regex: the pattern must match the whole path (Python's re.fullmatch;
//    PCRE2 here, which agrees with Python's re on the usual syntax);
//    layers_to_transform may not be combined with it (PEFT refuses too).
//  - AllLinear ("all-linear"): every linear layer except the output head
//    (lm_head). fjord also allows layers_to_transform with it (PEFT does not;
//    a saved adapter then lists the leaf names, which PEFT reads the same).
//  - exclude_modules (names or one regex, the same matching) removes modules.
// rank_pattern / alpha_pattern: the first key (in order) for which the regex
// "(.*\.)?(key)" matches the whole path gives that module's r / alpha (PEFT's
// get_pattern_key); otherwise r / alpha.
//
// Thread-safety: plain values; the functions are thread-safe.
#ifndef FJORD_LORA_LORA_CONFIG_H_
#define FJORD_LORA_LORA_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::lora {

// PEFT's target_modules (and exclude_modules).
struct TargetModules {
  enum class Kind {
    kNone,       // nothing (only meaningful for exclude_modules)
    kNames,      // a list: exact path or "." + name suffix
    kRegex,      // a string: full match of the path
    kAllLinear,  // "all-linear": every linear layer but the output head
  };
  Kind kind = Kind::kNone;
  std::vector<std::string> names;  // kNames: sorted, unique (as Names() makes them)
  std::string regex;               // kRegex

  static TargetModules None() { return {}; }
  static TargetModules Names(std::vector<std::string> names);
  static TargetModules Regex(std::string pattern);
  static TargetModules AllLinear();
  bool operator==(const TargetModules& other) const;
};

struct LoraConfig {
  int64_t r = 8;            // rank; >= 1. Higher: more capacity, more memory.
  double alpha = 8;         // lora_alpha; > 0. The update is scaled by alpha / r.
  double dropout = 0;       // on the adapter's input while training; [0, 1)
  bool use_rslora = false;  // scale alpha / sqrt(r) instead (rank-stabilised LoRA)
  TargetModules target_modules = TargetModules::AllLinear();
  TargetModules exclude_modules;                              // default none
  std::vector<int64_t> layers_to_transform;                   // empty: every layer
  std::vector<std::string> layers_pattern;                    // PEFT's layers_pattern; empty: any
  std::vector<std::pair<std::string, int64_t>> rank_pattern;  // in order; first match wins
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::string base_model_name_or_path;  // written to adapter_config.json
  std::optional<std::string> revision;

  // InvalidArgument naming the field: r < 1, alpha <= 0 or not finite,
  // dropout outside [0, 1), an empty name list, a pattern value out of
  // range, a negative layer index, a regex that does not compile, or
  // layers_to_transform/layers_pattern with a regex target.
  absl::Status Validate() const;
  bool operator==(const LoraConfig& other) const;
};

// A linear layer of the model, as target matching sees it.
struct ModuleInfo {
  std::string path;  // "model.layers.0.self_attn.q_proj", "lm_head"
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool is_output_head = false;  // lm_head: never part of all-linear
};

// A module the config adapts, with its rank and scale.
struct AdaptedModule {
  std::string path;
  int64_t in_features = 0;
  int64_t out_features = 0;
  int64_t r = 0;
  double alpha = 0;
  double scale = 0;  // alpha / r, or alpha / sqrt(r) with rsLoRA
};

// The scale of an adapter of rank r.
double LoraScale(double alpha, int64_t r, bool use_rslora);

// Whether `path` is targeted by `config` (exclusions applied), as above.
// InvalidArgument for a regex that does not compile.
absl::StatusOr<bool> IsTargeted(const LoraConfig& config, const ModuleInfo& module);

// The adapted modules, in the order of `modules`. InvalidArgument: the config
// is invalid (Validate), or no module matched (the message lists the
// targets and some module paths of the model).
absl::StatusOr<std::vector<AdaptedModule>> ResolveTargets(const LoraConfig& config,
                                                          const std::vector<ModuleInfo>& modules);

// The distinct leaf names (text after the last '.') of `adapted`, sorted:
// what a saved adapter lists as target_modules for all-linear.
std::vector<std::string> LeafNames(const std::vector<AdaptedModule>& adapted);

// Full-match regex test with PCRE2 (a bounded match limit, so a pathological
// pattern fails instead of running away). InvalidArgument naming the pattern
// when it does not compile or exceeds the match limit.
absl::StatusOr<bool> RegexFullMatch(absl::string_view pattern, absl::string_view text);

}  // namespace fjord::lora

#endif  // FJORD_LORA_LORA_CONFIG_H_
