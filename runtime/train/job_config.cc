#include "runtime/train/job_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
namespace {

// One settable field: how to read it from a YAML node and write it back.
struct Field {
  std::string section;
  std::string key;
  std::function<absl::Status(JobConfig&, const YAML::Node&, const std::string& where)> set;
  std::function<YAML::Node(const JobConfig&)> get;
};

std::string Where(absl::string_view name, const YAML::Node& node, absl::string_view field) {
  const YAML::Mark m = node.Mark();
  if (m.line >= 0) return absl::StrCat(name, ":", m.line + 1, ": field '", field, "'");
  return absl::StrCat(name, ": field '", field, "'");
}

template <class T>
absl::Status ReadScalar(const YAML::Node& node, const std::string& where, absl::string_view type,
                        T* out) {
  if (!node.IsScalar()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected ", type, ", got a ",
                                                   node.IsSequence() ? "list" : "mapping"));
  }
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected ", type, ", got '", node.Scalar(), "'"));
  }
  return absl::OkStatus();
}

Field StringField(std::string section, std::string key,
                  std::function<std::string&(JobConfig&)> ref,
                  std::vector<std::string> allowed = {}) {
  Field f{section, key, nullptr, nullptr};
  f.set = [ref, allowed](JobConfig& c, const YAML::Node& n, const std::string& where) {
    std::string v;
    FJORD_RETURN_IF_ERROR(ReadScalar(n, where, "a string", &v));
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": '", v, "' is not one of ",
                                                     absl::StrJoin(allowed, ", ")));
    }
    ref(c) = v;
    return absl::OkStatus();
  };
  f.get = [ref](const JobConfig& c) { return YAML::Node(ref(const_cast<JobConfig&>(c))); };
  return f;
}

template <class T>
Field NumberField(std::string section, std::string key, std::function<T&(JobConfig&)> ref,
                  double min, double max) {
  Field f{section, key, nullptr, nullptr};
  f.set = [ref, min, max](JobConfig& c, const YAML::Node& n, const std::string& where) {
    T v{};
    const char* type = std::is_integral_v<T> ? "an integer" : "a number";
    FJORD_RETURN_IF_ERROR(ReadScalar(n, where, type, &v));
    if (static_cast<double>(v) < min || static_cast<double>(v) > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", v, " is out of range [", min, ", ", max, "]"));
    }
    ref(c) = v;
    return absl::OkStatus();
  };
  f.get = [ref](const JobConfig& c) { return YAML::Node(ref(const_cast<JobConfig&>(c))); };
  return f;
}

Field BoolField(std::string section, std::string key, std::function<bool&(JobConfig&)> ref) {
  Field f{section, key, nullptr, nullptr};
  f.set = [ref](JobConfig& c, const YAML::Node& n, const std::string& where) {
    bool v = false;
    FJORD_RETURN_IF_ERROR(ReadScalar(n, where, "true or false", &v));
    ref(c) = v;
    return absl::OkStatus();
  };
  f.get = [ref](const JobConfig& c) { return YAML::Node(ref(const_cast<JobConfig&>(c))); };
  return f;
}

const std::vector<Field>& Fields() {
  static const std::vector<Field>* fields = [] {
    auto* v = new std::vector<Field>;
    constexpr double kBig = 1e18;
    v->push_back(StringField("model", "path", [](JobConfig& c) -> std::string& { return c.model.path; }));
    v->push_back(StringField("model", "dtype", [](JobConfig& c) -> std::string& { return c.model.dtype; },
                             {"auto", "float32", "bfloat16", "float16"}));
    v->push_back(StringField("data", "train", [](JobConfig& c) -> std::string& { return c.data.train; }));
    v->push_back(StringField("data", "validation", [](JobConfig& c) -> std::string& { return c.data.validation; }));
    v->push_back(StringField("data", "tokenizer", [](JobConfig& c) -> std::string& { return c.data.tokenizer; }));
    v->push_back(StringField("data", "chat_template", [](JobConfig& c) -> std::string& { return c.data.chat_template; },
                             {"auto", "llama3", "chatml", "none"}));
    v->push_back(NumberField<int64_t>("data", "max_length", [](JobConfig& c) -> int64_t& { return c.data.max_length; }, 2, 1 << 20));
    v->push_back(BoolField("data", "packing", [](JobConfig& c) -> bool& { return c.data.packing; }));
    v->push_back(BoolField("data", "train_on_inputs", [](JobConfig& c) -> bool& { return c.data.train_on_inputs; }));
    v->push_back(BoolField("data", "truncate", [](JobConfig& c) -> bool& { return c.data.truncate; }));
    v->push_back(BoolField("data", "shuffle", [](JobConfig& c) -> bool& { return c.data.shuffle; }));
    v->push_back(NumberField<int64_t>("lora", "r", [](JobConfig& c) -> int64_t& { return c.lora.r; }, 1, 4096));
    v->push_back(NumberField<double>("lora", "alpha", [](JobConfig& c) -> double& { return c.lora.alpha; }, 1e-6, 1e6));
    v->push_back(NumberField<double>("lora", "dropout", [](JobConfig& c) -> double& { return c.lora.dropout; }, 0, 0.999));
    v->push_back(BoolField("lora", "use_rslora", [](JobConfig& c) -> bool& { return c.lora.use_rslora; }));
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
            FJORD_RETURN_IF_ERROR(ReadScalar(n[i], absl::StrCat(where, "[", i, "]"), "a string", &s));
            out.push_back(s);
          }
        } else {
          return absl::InvalidArgumentError(absl::StrCat(where, ": expected a string or a list of strings"));
        }
        if (out.empty() || std::any_of(out.begin(), out.end(), [](const std::string& s) { return s.empty(); })) {
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
      v->push_back(f);
    }
    // rank_pattern / alpha_pattern: mappings of pattern -> number, in order.
    {
      Field f{"lora", "rank_pattern", nullptr, nullptr};
      f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
        std::vector<std::pair<std::string, int64_t>> out;
        if (!n.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping of module pattern: rank"));
        for (auto it = n.begin(); it != n.end(); ++it) {
          const YAML::Node k = it->first;
          const YAML::Node val = it->second;
          const std::string key = k.as<std::string>("");
          int64_t r = 0;
          FJORD_RETURN_IF_ERROR(ReadScalar(val, absl::StrCat(where, "[", key, "]"), "an integer", &r));
          if (key.empty() || r < 1 || r > 4096) {
            return absl::InvalidArgumentError(absl::StrCat(where, "[", key, "]: rank must be in [1, 4096] for a non-empty pattern"));
          }
          for (const auto& [seen, unused] : out) {
            if (seen == key) return absl::InvalidArgumentError(absl::StrCat(where, ": pattern '", key, "' appears twice"));
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
      v->push_back(f);
    }
    {
      Field f{"lora", "alpha_pattern", nullptr, nullptr};
      f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
        std::vector<std::pair<std::string, double>> out;
        if (!n.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping of module pattern: alpha"));
        for (auto it = n.begin(); it != n.end(); ++it) {
          const YAML::Node k = it->first;
          const YAML::Node val = it->second;
          const std::string key = k.as<std::string>("");
          double a = 0;
          FJORD_RETURN_IF_ERROR(ReadScalar(val, absl::StrCat(where, "[", key, "]"), "a number", &a));
          if (key.empty() || !(a > 0) || a > 1e6) {
            return absl::InvalidArgumentError(absl::StrCat(where, "[", key, "]: alpha must be in (0, 1e6] for a non-empty pattern"));
          }
          for (const auto& [seen, unused] : out) {
            if (seen == key) return absl::InvalidArgumentError(absl::StrCat(where, ": pattern '", key, "' appears twice"));
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
      v->push_back(f);
    }
    {
      Field f{"lora", "layers_to_transform", nullptr, nullptr};
      f.set = [](JobConfig& c, const YAML::Node& n, const std::string& where) {
        std::vector<int64_t> out;
        if (!n.IsSequence()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a list of layer indices"));
        for (size_t i = 0; i < n.size(); ++i) {
          int64_t x = 0;
          FJORD_RETURN_IF_ERROR(ReadScalar(n[i], absl::StrCat(where, "[", i, "]"), "an integer", &x));
          if (x < 0) return absl::InvalidArgumentError(absl::StrCat(where, "[", i, "]: layer index ", x, " is negative"));
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
      v->push_back(f);
    }
    auto& T = *v;
    T.push_back(NumberField<int64_t>("training", "epochs", [](JobConfig& c) -> int64_t& { return c.training.epochs; }, 1, 100000));
    T.push_back(NumberField<int64_t>("training", "max_steps", [](JobConfig& c) -> int64_t& { return c.training.max_steps; }, 0, kBig));
    T.push_back(NumberField<int64_t>("training", "micro_batch_size", [](JobConfig& c) -> int64_t& { return c.training.micro_batch_size; }, 1, 1 << 16));
    T.push_back(NumberField<int64_t>("training", "gradient_accumulation_steps", [](JobConfig& c) -> int64_t& { return c.training.gradient_accumulation_steps; }, 1, 1 << 16));
    T.push_back(NumberField<double>("training", "learning_rate", [](JobConfig& c) -> double& { return c.training.learning_rate; }, 0, 10));
    T.push_back(NumberField<double>("training", "weight_decay", [](JobConfig& c) -> double& { return c.training.weight_decay; }, 0, 10));
    T.push_back(NumberField<double>("training", "adam_beta1", [](JobConfig& c) -> double& { return c.training.adam_beta1; }, 0, 0.999999));
    T.push_back(NumberField<double>("training", "adam_beta2", [](JobConfig& c) -> double& { return c.training.adam_beta2; }, 0, 0.999999999));
    T.push_back(NumberField<double>("training", "adam_epsilon", [](JobConfig& c) -> double& { return c.training.adam_epsilon; }, 0, 1));
    T.push_back(StringField("training", "lr_scheduler", [](JobConfig& c) -> std::string& { return c.training.lr_scheduler; },
                            {"cosine", "linear", "constant"}));
    T.push_back(NumberField<int64_t>("training", "warmup_steps", [](JobConfig& c) -> int64_t& { return c.training.warmup_steps; }, 0, kBig));
    T.push_back(NumberField<double>("training", "warmup_ratio", [](JobConfig& c) -> double& { return c.training.warmup_ratio; }, 0, 1));
    T.push_back(NumberField<double>("training", "min_lr_ratio", [](JobConfig& c) -> double& { return c.training.min_lr_ratio; }, 0, 1));
    T.push_back(NumberField<double>("training", "max_grad_norm", [](JobConfig& c) -> double& { return c.training.max_grad_norm; }, -1, 1e9));
    T.push_back(NumberField<uint64_t>("training", "seed", [](JobConfig& c) -> uint64_t& { return c.training.seed; }, 0, 1.8e19));
    T.push_back(BoolField("training", "gradient_checkpointing", [](JobConfig& c) -> bool& { return c.training.gradient_checkpointing; }));
    T.push_back(StringField("training", "device", [](JobConfig& c) -> std::string& { return c.training.device; }, {"auto", "cpu", "cuda"}));
    T.push_back(StringField("training", "kernels", [](JobConfig& c) -> std::string& { return c.training.kernels; }, {"auto", "fused", "reference"}));
    T.push_back(NumberField<int64_t>("training", "threads", [](JobConfig& c) -> int64_t& { return c.training.threads; }, 0, 1024));
    T.push_back(NumberField<int64_t>("eval", "every_steps", [](JobConfig& c) -> int64_t& { return c.eval.every_steps; }, 0, kBig));
    T.push_back(NumberField<int64_t>("eval", "max_batches", [](JobConfig& c) -> int64_t& { return c.eval.max_batches; }, 0, kBig));
    T.push_back(StringField("eval", "heldout", [](JobConfig& c) -> std::string& { return c.eval.heldout; }));
    T.push_back(NumberField<int64_t>("eval", "max_new_tokens", [](JobConfig& c) -> int64_t& { return c.eval.max_new_tokens; }, 1, 4096));
    T.push_back(NumberField<int64_t>("checkpoint", "every_steps", [](JobConfig& c) -> int64_t& { return c.checkpoint.every_steps; }, 0, kBig));
    T.push_back(NumberField<int64_t>("checkpoint", "keep_last", [](JobConfig& c) -> int64_t& { return c.checkpoint.keep_last; }, 1, 1000000));
    T.push_back(StringField("output", "dir", [](JobConfig& c) -> std::string& { return c.output.dir; }));
    return v;
  }();
  return *fields;
}

const Field* FindField(absl::string_view section, absl::string_view key) {
  for (const Field& f : Fields()) {
    if (f.section == section && f.key == key) return &f;
  }
  return nullptr;
}

std::vector<std::string> KeysOf(absl::string_view section) {
  std::vector<std::string> keys;
  for (const Field& f : Fields()) {
    if (f.section == section) keys.push_back(f.key);
  }
  return keys;
}

absl::Status CheckRequired(const JobConfig& c, absl::string_view name) {
  if (c.model.path.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": field 'model.path' is required"));
  if (c.data.train.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": field 'data.train' is required"));
  if (c.output.dir.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": field 'output.dir' is required"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobConfig> ParseJobConfig(absl::string_view yaml, absl::string_view name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                                   ": not valid YAML: ", e.msg));
  }
  JobConfig config;
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the job config must be a mapping of sections (model, data, lora, training, eval, checkpoint, output)"));
  }
  const std::set<std::string> sections = {"model", "data", "lora", "training", "eval", "checkpoint", "output"};
  for (auto it = root.begin(); it != root.end(); ++it) {
    // yaml-cpp's iterator yields a temporary proxy: copy the nodes out (a
    // reference to it->second dangles; found by tests/fuzz/job_config).
    const YAML::Node section_key = it->first;
    const YAML::Node body = it->second;
    const std::string section = section_key.as<std::string>("");
    const std::string where = Where(name, section_key, section);
    if (!sections.count(section)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown section; expected one of model, data, lora, training, eval, checkpoint, output"));
    }
    if (body.IsNull()) continue;
    if (!body.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping"));
    for (auto jt = body.begin(); jt != body.end(); ++jt) {
      const YAML::Node key_node = jt->first;
      const YAML::Node value = jt->second;
      const std::string key = key_node.as<std::string>("");
      const std::string fwhere = Where(name, value.IsNull() ? key_node : value, section + "." + key);
      const Field* f = FindField(section, key);
      if (f == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(Where(name, key_node, section + "." + key),
                                                       ": unknown key; '", section, "' accepts ",
                                                       absl::StrJoin(KeysOf(section), ", ")));
      }
      FJORD_RETURN_IF_ERROR(f->set(config, value, fwhere));
    }
  }
  FJORD_RETURN_IF_ERROR(CheckRequired(config, name));
  return config;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open job config ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJobConfig(ss.str(), path);
}

absl::Status ApplyOverride(JobConfig& config, absl::string_view assignment) {
  const size_t eq = assignment.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--set '", assignment, "': expected section.field=value"));
  }
  const absl::string_view path = assignment.substr(0, eq);
  const std::vector<std::string> parts = absl::StrSplit(path, '.');
  const Field* f = parts.size() == 2 ? FindField(parts[0], parts[1]) : nullptr;
  if (f == nullptr) return absl::InvalidArgumentError(absl::StrCat("--set: unknown field '", path, "'"));
  YAML::Node value;
  try {
    value = YAML::Load(std::string(assignment.substr(eq + 1)));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("--set ", path, ": not a YAML value: ", e.msg));
  }
  if (value.IsNull()) value = YAML::Node(std::string());
  return f->set(config, value, absl::StrCat("--set: field '", path, "'"));
}

std::string JobConfig::ToYaml() const {
  YAML::Node root;
  for (const Field& f : Fields()) root[f.section][f.key] = f.get(*this);
  YAML::Emitter out;
  out << root;
  return out.c_str();
}

}  // namespace fjord::train
