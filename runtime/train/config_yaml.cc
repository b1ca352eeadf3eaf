#include "runtime/train/config_yaml.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/data/jsonl.h"
#include "runtime/util/status_macros.h"

namespace fjord::train::config_yaml {

std::string Where(absl::string_view name, const YAML::Node& node, absl::string_view field) {
  const YAML::Mark m = node.Mark();
  if (m.line >= 0) return absl::StrCat(name, ":", m.line + 1, ": field '", field, "'");
  return absl::StrCat(name, ": field '", field, "'");
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status CheckText(absl::string_view text, const std::string& where) {
  if (std::optional<size_t> bad = data::FindInvalidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: invalid UTF-8 at byte %d (0x%02x)",
                                                      where, *bad,
                                                      static_cast<unsigned char>(text[*bad])));
  }
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: control character 0x%02x at byte %d (not allowed in a config's text)", where, c, i));
    }
  }
  return absl::OkStatus();
}

namespace internal {
namespace {

// The sections, in the order of their first field.
std::vector<std::string> SectionsOf(const Erased& schema) {
  std::vector<std::string> sections;
  for (const auto& [section, key] : schema.keys) {
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      sections.push_back(section);
  }
  return sections;
}

std::vector<std::string> KeysOf(const Erased& schema, absl::string_view section) {
  std::vector<std::string> keys;
  for (const auto& [s, key] : schema.keys) {
    if (s == section) keys.push_back(key);
  }
  return keys;
}

// The index of section.key, or -1.
int64_t FindField(const Erased& schema, absl::string_view section, absl::string_view key) {
  for (size_t i = 0; i < schema.keys.size(); ++i) {
    if (schema.keys[i].first == section && schema.keys[i].second == key)
      return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace

absl::Status CheckAllowed(const std::string& value, const std::vector<std::string>& allowed,
                          const std::string& where) {
  if (allowed.empty() || std::find(allowed.begin(), allowed.end(), value) != allowed.end()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": '", value, "' is not one of ", absl::StrJoin(allowed, ", ")));
}

absl::Status ParseInto(const Erased& schema, absl::string_view yaml, absl::string_view name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": not valid YAML: ", e.msg));
  }
  const std::vector<std::string> sections = SectionsOf(schema);
  const std::string listed = absl::StrJoin(sections, ", ");
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", schema.what, " must be a mapping of sections (", listed, ")"));
  }
  for (auto it = root.begin(); it != root.end(); ++it) {
    // yaml-cpp's iterator yields a temporary proxy: copy the nodes out (a
    // reference to it->second dangles; found by tests/fuzz/job_config).
    const YAML::Node section_key = it->first;
    const YAML::Node body = it->second;
    const std::string section = section_key.as<std::string>("");
    const std::string where = Where(name, section_key, section);
    if (std::find(sections.begin(), sections.end(), section) == sections.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unknown section; expected one of ", listed));
    }
    if (body.IsNull()) continue;
    if (!body.IsMap())
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping"));
    for (auto jt = body.begin(); jt != body.end(); ++jt) {
      const YAML::Node key_node = jt->first;
      const YAML::Node value = jt->second;
      const std::string key = key_node.as<std::string>("");
      const int64_t field = FindField(schema, section, key);
      if (field < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(name, key_node, section + "." + key), ": unknown key; '", section,
                         "' accepts ", absl::StrJoin(KeysOf(schema, section), ", ")));
      }
      const std::string fwhere =
          Where(name, value.IsNull() ? key_node : value, section + "." + key);
      FJORD_RETURN_IF_ERROR(schema.set(static_cast<size_t>(field), value, fwhere));
    }
  }
  return absl::OkStatus();
}

absl::Status OverrideInto(const Erased& schema, absl::string_view assignment) {
  const size_t eq = assignment.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set '", assignment, "': expected section.field=value"));
  }
  const absl::string_view path = assignment.substr(0, eq);
  const std::vector<std::string> parts = absl::StrSplit(path, '.');
  const int64_t field = parts.size() == 2 ? FindField(schema, parts[0], parts[1]) : -1;
  if (field < 0)
    return absl::InvalidArgumentError(absl::StrCat("--set: unknown field '", path, "'"));
  YAML::Node value;
  try {
    value = YAML::Load(std::string(assignment.substr(eq + 1)));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("--set ", path, ": not a YAML value: ", e.msg));
  }
  if (value.IsNull()) value = YAML::Node(std::string());
  return schema.set(static_cast<size_t>(field), value, absl::StrCat("--set: field '", path, "'"));
}

}  // namespace internal
}  // namespace fjord::train::config_yaml
