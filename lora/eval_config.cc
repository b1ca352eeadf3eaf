#include "lora/eval_config.h"

#include <yaml-cpp/yaml.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/eval/metrics.h"
#include "runtime/train/config_yaml.h"
#include "runtime/util/env.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora {

namespace cy = train::config_yaml;

const std::vector<std::string>& ComparisonMetrics() {
  static const std::vector<std::string>* names = [] {
    auto* v = new std::vector<std::string>{"loss", "perplexity", "token_accuracy"};
    for (const std::string& m : eval::AnswerMetricNames()) v->push_back(m);
    return v;
  }();
  return *names;
}

// ---- the job file ---------------------------------------------------------------

namespace {

constexpr const char* kEvaluationKeys =
    "model, candidates, datasets, metrics, chat_template, max_new_tokens, batch_size, samples, "
    "bootstrap, seed, device, judge, output_dir, job_id, model_name";

absl::Status ReadInt(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi,
                     int64_t* out) {
  FJORD_RETURN_IF_ERROR(cy::ReadScalar(n, where, "an integer", out));
  if (*out < lo || *out > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", *out, " is out of range [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

// A list of mappings with the given keys (strings); `required` must be there.
absl::Status ReadEntries(const YAML::Node& list, absl::string_view name, const std::string& field,
                         const std::vector<std::string>& keys, const std::string& required,
                         std::vector<std::map<std::string, std::string>>* out) {
  const std::string where = cy::Where(name, list, field);
  if (!list.IsSequence() || list.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected a non-empty list"));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node e = list[i];
    const std::string item = absl::StrCat(field, "[", i, "]");
    if (!e.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(cy::Where(name, e, item), ": expected a mapping"));
    }
    std::map<std::string, std::string> m;
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string key = it->first.as<std::string>("");
      bool known = false;
      for (const std::string& k : keys) known = known || k == key;
      const std::string w = cy::Where(name, it->second, absl::StrCat(item, ".", key));
      if (!known) {
        std::string list_keys;
        for (const std::string& k : keys)
          absl::StrAppend(&list_keys, list_keys.empty() ? "" : ", ", k);
        return absl::InvalidArgumentError(
            absl::StrCat(w, ": unknown key (known: ", list_keys, ")"));
      }
      std::string v;
      FJORD_RETURN_IF_ERROR(cy::ReadScalar(it->second, w, "a string", &v));
      m[key] = v;
    }
    if (m[required].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(cy::Where(name, e, item), ": '", required, "' is required"));
    }
    out->push_back(std::move(m));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsEvaluationYaml(absl::string_view yaml) {
  try {
    const YAML::Node root = YAML::Load(std::string(yaml));
    return root.IsMap() && root["evaluation"].IsDefined();
  } catch (const YAML::Exception&) {
    return false;
  }
}

absl::StatusOr<EvaluationConfig> ParseEvaluationConfig(absl::string_view yaml,
                                                       absl::string_view name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  if (!root.IsMap() || root.size() != 1 || !root["evaluation"].IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": an evaluation job file is one mapping 'evaluation:' of ", kEvaluationKeys));
  }
  const YAML::Node ev = root["evaluation"];
  EvaluationConfig c;
  try {
    for (auto it = ev.begin(); it != ev.end(); ++it) {
      const std::string key = it->first.as<std::string>("");
      const YAML::Node v = it->second;
      const std::string field = absl::StrCat("evaluation.", key);
      const std::string where = cy::Where(name, v, field);
      if (key == "model" || key == "chat_template" || key == "device" || key == "judge" ||
          key == "output_dir" || key == "job_id" || key == "model_name") {
        std::string s;
        FJORD_RETURN_IF_ERROR(cy::ReadScalar(v, where, "a string", &s));
        if (key == "model") c.model = s;
        if (key == "chat_template") c.chat_template = s;
        if (key == "device") {
          if (s != "auto" && s != "cpu" && s != "cuda") {
            return absl::InvalidArgumentError(
                absl::StrCat(where, ": '", s, "' is not one of auto, cpu, cuda"));
          }
          c.device = s;
        }
        if (key == "judge") c.judge = s;
        if (key == "output_dir") c.output_dir = s;
        if (key == "job_id") c.job_id = s;
        if (key == "model_name") c.model_name = s;
      } else if (key == "max_new_tokens") {
        FJORD_RETURN_IF_ERROR(ReadInt(v, where, 1, 4096, &c.max_new_tokens));
      } else if (key == "batch_size") {
        FJORD_RETURN_IF_ERROR(ReadInt(v, where, 1, 256, &c.batch_size));
      } else if (key == "samples") {
        FJORD_RETURN_IF_ERROR(ReadInt(v, where, 0, 100, &c.samples));
      } else if (key == "bootstrap") {
        FJORD_RETURN_IF_ERROR(ReadInt(v, where, 100, 100000, &c.bootstrap));
      } else if (key == "seed") {
        int64_t s = 0;
        FJORD_RETURN_IF_ERROR(ReadInt(v, where, 0, INT64_MAX, &s));
        c.seed = static_cast<uint64_t>(s);
      } else if (key == "metrics") {
        if (!v.IsSequence()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": expected a list of metrics"));
        }
        for (size_t i = 0; i < v.size(); ++i) {
          std::string m;
          const std::string w = cy::Where(name, v[i], absl::StrCat(field, "[", i, "]"));
          FJORD_RETURN_IF_ERROR(cy::ReadScalar(v[i], w, "a string", &m));
          bool known = false;
          for (const std::string& k : ComparisonMetrics()) known = known || k == m;
          if (!known) {
            std::string all;
            for (const std::string& k : ComparisonMetrics())
              absl::StrAppend(&all, all.empty() ? "" : ", ", k);
            return absl::InvalidArgumentError(
                absl::StrCat(w, ": unknown metric '", m, "' (known: ", all, ")"));
          }
          c.metrics.push_back(m);
        }
      } else if (key == "candidates") {
        std::vector<std::map<std::string, std::string>> entries;
        FJORD_RETURN_IF_ERROR(ReadEntries(
            v, name, field,
            {"name", "adapter", "adapter_config", "adapter_model", "model", "model_name"}, "name",
            &entries));
        std::set<std::string> seen;
        for (size_t i = 0; i < entries.size(); ++i) {
          auto& e = entries[i];
          const std::string w = cy::Where(name, v[i], absl::StrCat(field, "[", i, "]"));
          if (!seen.insert(e["name"]).second) {
            return absl::InvalidArgumentError(
                absl::StrCat(w, ": candidate name '", e["name"], "' appears twice"));
          }
          if (e["adapter_config"].empty() != e["adapter_model"].empty() ||
              (!e["adapter"].empty() && !e["adapter_config"].empty())) {
            return absl::InvalidArgumentError(absl::StrCat(
                w,
                ": an adapter is a directory (adapter) or its two files (adapter_config and "
                "adapter_model)"));
          }
          c.candidates.push_back({e["name"], e["adapter"], e["adapter_config"], e["adapter_model"],
                                  e["model"], e["model_name"]});
        }
      } else if (key == "datasets") {
        std::vector<std::map<std::string, std::string>> entries;
        FJORD_RETURN_IF_ERROR(ReadEntries(v, name, field, {"name", "path"}, "path", &entries));
        for (auto& e : entries) c.datasets.push_back({e["name"], e["path"]});
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key (known: ", kEvaluationKeys, ")"));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.mark.line + 1, ": ", e.msg));
  }
  for (const auto& [field, missing] : {std::pair<const char*, bool>{"model", c.model.empty()},
                                       {"candidates", c.candidates.empty()},
                                       {"datasets", c.datasets.empty()}}) {
    if (missing) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": field 'evaluation.", field, "' is required"));
    }
  }
  return c;
}

absl::StatusOr<EvaluationConfig> LoadEvaluationConfig(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::string text, Env::Default()->ReadFileToString(path));
  return ParseEvaluationConfig(text, path);
}

std::string EvaluationConfigToYaml(const EvaluationConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "evaluation" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::DoubleQuoted << c.model;
  out << YAML::Key << "candidates" << YAML::Value << YAML::BeginSeq;
  for (const EvaluationConfig::Candidate& k : c.candidates) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << k.name;
    if (!k.adapter.empty())
      out << YAML::Key << "adapter" << YAML::Value << YAML::DoubleQuoted << k.adapter;
    if (!k.adapter_config.empty()) {
      out << YAML::Key << "adapter_config" << YAML::Value << YAML::DoubleQuoted << k.adapter_config;
      out << YAML::Key << "adapter_model" << YAML::Value << YAML::DoubleQuoted << k.adapter_model;
    }
    if (!k.model.empty())
      out << YAML::Key << "model" << YAML::Value << YAML::DoubleQuoted << k.model;
    if (!k.model_name.empty())
      out << YAML::Key << "model_name" << YAML::Value << YAML::DoubleQuoted << k.model_name;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "datasets" << YAML::Value << YAML::BeginSeq;
  for (const EvaluationConfig::Dataset& d : c.datasets) {
    out << YAML::BeginMap;
    if (!d.name.empty()) out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << d.name;
    out << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted << d.path << YAML::EndMap;
  }
  out << YAML::EndSeq;
  if (!c.metrics.empty()) {
    out << YAML::Key << "metrics" << YAML::Value << YAML::Flow << c.metrics;
  }
  out << YAML::Key << "chat_template" << YAML::Value << YAML::DoubleQuoted << c.chat_template;
  out << YAML::Key << "max_new_tokens" << YAML::Value << c.max_new_tokens;
  out << YAML::Key << "batch_size" << YAML::Value << c.batch_size;
  out << YAML::Key << "samples" << YAML::Value << c.samples;
  out << YAML::Key << "bootstrap" << YAML::Value << c.bootstrap;
  out << YAML::Key << "seed" << YAML::Value << c.seed;
  out << YAML::Key << "device" << YAML::Value << c.device;
  if (!c.judge.empty()) out << YAML::Key << "judge" << YAML::Value << YAML::DoubleQuoted << c.judge;
  if (!c.output_dir.empty())
    out << YAML::Key << "output_dir" << YAML::Value << YAML::DoubleQuoted << c.output_dir;
  if (!c.job_id.empty())
    out << YAML::Key << "job_id" << YAML::Value << YAML::DoubleQuoted << c.job_id;
  if (!c.model_name.empty())
    out << YAML::Key << "model_name" << YAML::Value << YAML::DoubleQuoted << c.model_name;
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace fjord::lora
