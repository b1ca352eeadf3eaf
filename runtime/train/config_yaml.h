// The YAML layer under TrainingConfig (training_config.h) and the configs that
// extend it with sections of their own (lora::JobConfig adds `lora:`,
// lora/job_config.cc): a config is a mapping of sections, each a mapping of
// typed fields, described by a table of Field. One parser gives every such
// config the same behaviour and the same messages:
//   - an unknown section or key is refused, listing the accepted ones (a typo
//     must not silently mean "default");
//   - "NAME:LINE: field 'section.key': expected an integer, got 'x'",
//     "...: 0 is out of range [1, 4096]", "...: 'x' is not one of a, b";
//   - a missing required field: "NAME: field 'model.path' is required".
//
// To extend TrainingConfig with a section, derive from it, lift its fields
// (Lift) and add yours, as lora/job_config.cc does.
//
// Thread-safety: the functions are thread-safe; a Schema is immutable once built.
#ifndef FJORD_RUNTIME_TRAIN_CONFIG_YAML_H_
#define FJORD_RUNTIME_TRAIN_CONFIG_YAML_H_

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "runtime/train/training_config.h"
#include "runtime/util/status_macros.h"

namespace fjord::train::config_yaml {

// One settable field of a config of type C: how to read it from a YAML node
// and write it back.
template <class C>
struct Field {
  std::string section;
  std::string key;
  // Reads `node` into `config`. InvalidArgument whose message starts with
  // `where` ("job.yaml:9: field 'lora.r'").
  std::function<absl::Status(C& config, const YAML::Node& node, const std::string& where)> set;
  std::function<YAML::Node(const C& config)> get;
};

// A config's fields, sections in the order they are listed in messages and
// written by ToYaml, and the check of its required fields.
template <class C>
struct Schema {
  std::string what;  // in messages: "the job config must be a mapping of sections (...)"
  std::vector<Field<C>> fields;
  // After parsing, and in Validate: InvalidArgument naming `name` for a
  // missing required field. May be empty.
  std::function<absl::Status(const C& config, absl::string_view name)> check;
};

// "NAME:LINE: field 'FIELD'" from the node's position ("NAME: field 'FIELD'"
// when it has none).
std::string Where(absl::string_view name, const YAML::Node& node, absl::string_view field);

// OK when `text` is valid UTF-8 without control characters other than tab
// and newline; else InvalidArgument "WHERE: ..." saying which byte. Strings
// of a config must survive writing it back (ToYaml) unchanged: an emitter
// replaces invalid UTF-8, and a carriage return or other control character
// in a path is a mistake, never meant.
absl::Status CheckText(absl::string_view text, const std::string& where);

// Reads a scalar node as T (a string is checked with CheckText).
// InvalidArgument "WHERE: expected TYPE, got 'x'" (or "got a list" / "got a
// mapping").
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
  if constexpr (std::is_same_v<T, std::string>) return CheckText(*out, where);
  return absl::OkStatus();
}

// A string; when `allowed` is not empty, one of its values.
template <class C>
Field<C> StringField(std::string section, std::string key, std::function<std::string&(C&)> ref,
                     std::vector<std::string> allowed = {});
// An integer or floating-point number in [min, max].
template <class T, class C>
Field<C> NumberField(std::string section, std::string key, std::function<T&(C&)> ref, double min,
                     double max);
template <class C>
Field<C> BoolField(std::string section, std::string key, std::function<bool&(C&)> ref);

// A field of a base config B as a field of a config D derived from B.
template <class D, class B>
Field<D> Lift(Field<B> f) {
  static_assert(std::is_base_of_v<B, D>);
  Field<D> out{std::move(f.section), std::move(f.key), nullptr, nullptr};
  out.set = [set = std::move(f.set)](D& c, const YAML::Node& n, const std::string& where) {
    return set(c, n, where);
  };
  out.get = [get = std::move(f.get)](const D& c) { return get(c); };
  return out;
}

// Parses YAML text into a C (defaults where the text is silent), then runs
// schema.check. InvalidArgument naming `name`, the line and the field for
// malformed YAML, a document that is not a mapping, an unknown section or
// key, a wrong type or an out-of-range value.
template <class C>
absl::StatusOr<C> Parse(const Schema<C>& schema, absl::string_view yaml, absl::string_view name);
// Applies one "section.field=value" (as fjord-train's --set). InvalidArgument
// for a malformed assignment, an unknown field or a bad value.
template <class C>
absl::Status ApplyOverride(const Schema<C>& schema, C& config, absl::string_view assignment);
// Every field, defaults included, in schema order.
template <class C>
std::string ToYaml(const Schema<C>& schema, const C& config);
// Checks `config` as if it had been read from YAML: every field's value
// (ranges, allowed names) and schema.check. InvalidArgument
// "NAME: field 'section.key': ..." for the first bad field.
template <class C>
absl::Status Validate(const Schema<C>& schema, const C& config, absl::string_view name);

// The text of a config file. NotFound "cannot open WHAT PATH" when it cannot
// be opened ("cannot open job config job.yaml").
absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what);

// TrainingConfig's schema: sections model, data, training, eval, checkpoint,
// output; what "the training config"; check: model.path, data.train and
// output.dir are required.
const Schema<TrainingConfig>& TrainingConfigSchema();

// ---- Implementation ------------------------------------------------------------

namespace internal {

// The parser and the override over a type-erased config: `set(i, node, where)`
// sets field i of the config being built.
struct Erased {
  std::string what;
  std::vector<std::pair<std::string, std::string>> keys;  // (section, key) per field
  std::function<absl::Status(size_t field, const YAML::Node& node, const std::string& where)> set;
};
absl::Status ParseInto(const Erased& schema, absl::string_view yaml, absl::string_view name);
absl::Status OverrideInto(const Erased& schema, absl::string_view assignment);

template <class C>
Erased Erase(const Schema<C>& schema, C& config) {
  Erased e;
  e.what = schema.what;
  for (const Field<C>& f : schema.fields) e.keys.emplace_back(f.section, f.key);
  e.set = [&schema, &config](size_t i, const YAML::Node& node, const std::string& where) {
    return schema.fields[i].set(config, node, where);
  };
  return e;
}

// InvalidArgument "WHERE: 'x' is not one of a, b" unless `allowed` is empty
// or holds `value`.
absl::Status CheckAllowed(const std::string& value, const std::vector<std::string>& allowed,
                          const std::string& where);

}  // namespace internal

template <class C>
Field<C> StringField(std::string section, std::string key, std::function<std::string&(C&)> ref,
                     std::vector<std::string> allowed) {
  Field<C> f{std::move(section), std::move(key), nullptr, nullptr};
  f.set = [ref, allowed = std::move(allowed)](C& c, const YAML::Node& n, const std::string& where) {
    std::string v;
    absl::Status s = ReadScalar(n, where, "a string", &v);
    if (s.ok()) s = internal::CheckAllowed(v, allowed, where);
    if (s.ok()) ref(c) = v;
    return s;
  };
  f.get = [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); };
  return f;
}

template <class T, class C>
Field<C> NumberField(std::string section, std::string key, std::function<T&(C&)> ref, double min,
                     double max) {
  Field<C> f{std::move(section), std::move(key), nullptr, nullptr};
  f.set = [ref, min, max](C& c, const YAML::Node& n, const std::string& where) {
    T v{};
    FJORD_RETURN_IF_ERROR(
        ReadScalar(n, where, std::is_integral_v<T> ? "an integer" : "a number", &v));
    if (static_cast<double>(v) < min || static_cast<double>(v) > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", v, " is out of range [", min, ", ", max, "]"));
    }
    ref(c) = v;
    return absl::OkStatus();
  };
  f.get = [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); };
  return f;
}

template <class C>
Field<C> BoolField(std::string section, std::string key, std::function<bool&(C&)> ref) {
  Field<C> f{std::move(section), std::move(key), nullptr, nullptr};
  f.set = [ref](C& c, const YAML::Node& n, const std::string& where) {
    bool v = false;
    absl::Status s = ReadScalar(n, where, "true or false", &v);
    if (s.ok()) ref(c) = v;
    return s;
  };
  f.get = [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); };
  return f;
}

template <class C>
absl::StatusOr<C> Parse(const Schema<C>& schema, absl::string_view yaml, absl::string_view name) {
  C config;
  FJORD_RETURN_IF_ERROR(internal::ParseInto(internal::Erase(schema, config), yaml, name));
  if (schema.check) FJORD_RETURN_IF_ERROR(schema.check(config, name));
  return config;
}

template <class C>
absl::Status ApplyOverride(const Schema<C>& schema, C& config, absl::string_view assignment) {
  return internal::OverrideInto(internal::Erase(schema, config), assignment);
}

template <class C>
std::string ToYaml(const Schema<C>& schema, const C& config) {
  YAML::Node root;
  for (const Field<C>& f : schema.fields) root[f.section][f.key] = f.get(config);
  YAML::Emitter out;
  out << root;
  return out.c_str();
}

template <class C>
absl::Status Validate(const Schema<C>& schema, const C& config, absl::string_view name) {
  C scratch = config;
  for (const Field<C>& f : schema.fields) {
    FJORD_RETURN_IF_ERROR(
        f.set(scratch, f.get(config), absl::StrCat(name, ": field '", f.section, ".", f.key, "'")));
  }
  return schema.check ? schema.check(config, name) : absl::OkStatus();
}

}  // namespace fjord::train::config_yaml

#endif  // FJORD_RUNTIME_TRAIN_CONFIG_YAML_H_
