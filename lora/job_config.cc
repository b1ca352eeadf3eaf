#include "lora/job_config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/train/config_yaml.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora {
namespace {

namespace cy = train::config_yaml;
using Field = cy::Field<JobConfig>;

// The `lora:` section.
std::vector<Field> LoraFields() {
  std::vector<Field> v;
  v.push_back(cy::NumberField<int64_t, JobConfig>(
      "lora", "r", [](JobConfig& c) -> int64_t& { return c.lora.r; }, 1, 4096));
  v.push_back(cy::NumberField<double, JobConfig>(
      "lora", "alpha", [](JobConfig& c) -> double& { return c.lora.alpha; }, 1e-6, 1e6));
  v.push_back(cy::NumberField<double, JobConfig>(
      "lora", "dropout", [](JobConfig& c) -> double& { return c.lora.dropout; }, 0, 0.999));
  v.push_back(cy::BoolField<JobConfig>("lora", "use_rslora",
                                       [](JobConfig& c) -> bool& { return c.lora.use_rslora; }));
  v.push_back(cy::StringField<JobConfig>(
      "lora", "init_from", [](JobConfig& c) -> std::string& { return c.lora.init_from; }));
  {
    Field f{"lora", "target_modules", nullptr, nullptr};
    f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
      std::vector<std::string> out;
      bool regex = false;
      if (n.IsScalar()) {
        out.push_back(n.Scalar());
        regex = out[0] != "all-linear";
      } else if (n.IsSequence()) {
        for (size_t i = 0; i < n.size(); ++i) {
          std::string s;
          FJORD_RETURN_IF_ERROR(
              cy::ReadScalar(n[i], absl::StrCat(where, "[", i, "]"), "a string", &s));
          out.push_back(s);
        }
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected a string or a list of strings"));
      }
      if (out.empty() ||
          std::any_of(out.begin(), out.end(), [](const std::string& s) { return s.empty(); })) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": must name at least one module"));
      }
      c.lora.target_modules = out;
      c.lora.target_modules_regex = regex;
      return absl::OkStatus();
    };
    f.get = [](const JobConfig& c) {
      if (c.lora.target_modules_regex && c.lora.target_modules.size() == 1) {
        return YAML::Node(c.lora.target_modules[0]);
      }
      return YAML::Node(c.lora.target_modules);
    };
    v.push_back(f);
  }
  // rank_pattern / alpha_pattern: mappings of pattern -> number, in order.
  {
    Field f{"lora", "rank_pattern", nullptr, nullptr};
    f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
      std::vector<std::pair<std::string, int64_t>> out;
      if (!n.IsMap())
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected a mapping of module pattern: rank"));
      for (auto it = n.begin(); it != n.end(); ++it) {
        const YAML::Node k = it->first;
        const YAML::Node val = it->second;
        const std::string key = k.as<std::string>("");
        FJORD_RETURN_IF_ERROR(cy::CheckText(key, absl::StrCat(where, " key")));
        int64_t r = 0;
        FJORD_RETURN_IF_ERROR(
            cy::ReadScalar(val, absl::StrCat(where, "[", key, "]"), "an integer", &r));
        if (key.empty() || r < 1 || r > 4096) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, "[", key, "]: rank must be in [1, 4096] for a non-empty pattern"));
        }
        for (const auto& [seen, unused] : out) {
          if (seen == key)
            return absl::InvalidArgumentError(
                absl::StrCat(where, ": pattern '", key, "' appears twice"));
        }
        out.emplace_back(key, r);
      }
      c.lora.rank_pattern = out;
      return absl::OkStatus();
    };
    f.get = [](const JobConfig& c) {
      YAML::Node n(YAML::NodeType::Map);
      for (const auto& [k, r] : c.lora.rank_pattern) n[k] = r;
      return n;
    };
    v.push_back(f);
  }
  {
    Field f{"lora", "alpha_pattern", nullptr, nullptr};
    f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
      std::vector<std::pair<std::string, double>> out;
      if (!n.IsMap())
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected a mapping of module pattern: alpha"));
      for (auto it = n.begin(); it != n.end(); ++it) {
        const YAML::Node k = it->first;
        const YAML::Node val = it->second;
        const std::string key = k.as<std::string>("");
        FJORD_RETURN_IF_ERROR(cy::CheckText(key, absl::StrCat(where, " key")));
        double a = 0;
        FJORD_RETURN_IF_ERROR(
            cy::ReadScalar(val, absl::StrCat(where, "[", key, "]"), "a number", &a));
        if (key.empty() || !(a > 0) || a > 1e6) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, "[", key, "]: alpha must be in (0, 1e6] for a non-empty pattern"));
        }
        for (const auto& [seen, unused] : out) {
          if (seen == key)
            return absl::InvalidArgumentError(
                absl::StrCat(where, ": pattern '", key, "' appears twice"));
        }
        out.emplace_back(key, a);
      }
      c.lora.alpha_pattern = out;
      return absl::OkStatus();
    };
    f.get = [](const JobConfig& c) {
      YAML::Node n(YAML::NodeType::Map);
      for (const auto& [k, a] : c.lora.alpha_pattern) n[k] = a;
      return n;
    };
    v.push_back(f);
  }
  {
    Field f{"lora", "layers_to_transform", nullptr, nullptr};
    f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
      std::vector<int64_t> out;
      if (!n.IsSequence())
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected a list of layer indices"));
      for (size_t i = 0; i < n.size(); ++i) {
        int64_t x = 0;
        FJORD_RETURN_IF_ERROR(
            cy::ReadScalar(n[i], absl::StrCat(where, "[", i, "]"), "an integer", &x));
        if (x < 0)
          return absl::InvalidArgumentError(
              absl::StrCat(where, "[", i, "]: layer index ", x, " is negative"));
        out.push_back(x);
      }
      c.lora.layers_to_transform = out;
      return absl::OkStatus();
    };
    f.get = [](const JobConfig& c) {
      YAML::Node n(YAML::NodeType::Sequence);
      for (int64_t x : c.lora.layers_to_transform) n.push_back(x);
      return n;
    };
    v.push_back(f);
  }
  return v;
}

// The training config's sections with `lora:` after `data:`.
const cy::Schema<JobConfig>& JobSchema() {
  static const cy::Schema<JobConfig>* schema = [] {
    const cy::Schema<train::TrainingConfig>& base = cy::TrainingConfigSchema();
    auto* s = new cy::Schema<JobConfig>;
    s->what = "the job config";
    bool lora_added = false;
    for (const auto& f : base.fields) {
      if (!lora_added && f.section != "model" && f.section != "data") {
        for (Field& l : LoraFields()) s->fields.push_back(std::move(l));
        lora_added = true;
      }
      s->fields.push_back(cy::Lift<JobConfig>(f));
    }
    s->check = [check = base.check](const JobConfig& c, absl::string_view name) {
      return check(c, name);
    };
    return s;
  }();
  return *schema;
}

}  // namespace

std::string JobConfig::ToYaml() const { return cy::ToYaml(JobSchema(), *this); }

absl::Status JobConfig::Validate() const { return cy::Validate(JobSchema(), *this, "job config"); }

absl::StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml, absl::string_view name) {
  return cy::Parse(JobSchema(), yaml, name);
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::string text, cy::ReadFile(path, "job config"));
  return ParseJobConfig(text, path);
}

absl::Status ApplyOverride(JobConfig& config, absl::string_view assignment) {
  return cy::ApplyOverride(JobSchema(), config, assignment);
}

}  // namespace fjord::lora
