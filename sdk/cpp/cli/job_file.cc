#include "sdk/cpp/cli/job_file.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/protocol/errors.h"
#include "runtime/util/status_macros.h"

namespace fjord::cli {
namespace {

using nlohmann::json;

absl::Status At(const std::string& name, const YAML::Mark& mark, const std::string& message) {
  return absl::InvalidArgumentError(
      absl::StrCat(name.empty() ? "job" : name,
                   mark.line >= 0 ? absl::StrCat(":", mark.line + 1) : "", ": ", message));
}

// YAML 1.2 core-schema numbers, matched by hand (std::regex trips GCC's
// -Wmaybe-uninitialized under -fsanitize=address, and is slow besides):
//   int:   [-+]?[0-9]+
//   float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
size_t SkipDigits(const std::string& s, size_t i) {
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  return i;
}

bool IsYamlInt(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  const size_t end = SkipDigits(s, i);
  return end > i && end == s.size();
}

bool IsYamlFloat(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  const size_t int_end = SkipDigits(s, i);
  if (int_end > i) {
    i = int_end;
    if (i < s.size() && s[i] == '.') i = SkipDigits(s, i + 1);
  } else {
    if (i >= s.size() || s[i] != '.') return false;
    const size_t frac_end = SkipDigits(s, i + 1);
    if (frac_end == i + 1) return false;
    i = frac_end;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    const size_t exp_end = SkipDigits(s, i);
    if (exp_end == i) return false;
    i = exp_end;
  }
  return i == s.size();
}

json PlainScalar(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (IsYamlInt(s)) {
    int64_t v;
    if (absl::SimpleAtoi(s, &v)) return v;
  }
  if (IsYamlFloat(s)) {
    double d;
    if (absl::SimpleAtod(s, &d) && std::isfinite(d)) return d;
  }
  return s;
}

absl::Status Convert(const YAML::Node& node, const std::string& path, JobDocument& doc, json* out,
                     int depth) {
  if (depth > 16) return At(doc.name, node.Mark(), "the YAML nests too deeply");
  if (!path.empty() && node.Mark().line >= 0) doc.lines[path] = node.Mark().line + 1;
  switch (node.Type()) {
    case YAML::NodeType::Null:
      *out = nullptr;
      return absl::OkStatus();
    case YAML::NodeType::Scalar:
      *out = node.Tag() == "!" ? json(node.Scalar()) : PlainScalar(node.Scalar());
      return absl::OkStatus();
    case YAML::NodeType::Sequence: {
      *out = json::array();
      int i = 0;
      for (const YAML::Node& item : node) {
        json v;
        FJORD_RETURN_IF_ERROR(Convert(item, absl::StrCat(path, "[", i++, "]"), doc, &v, depth + 1));
        out->push_back(std::move(v));
      }
      return absl::OkStatus();
    }
    case YAML::NodeType::Map: {
      *out = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar())
          return At(doc.name, kv.first.Mark(), "mapping keys must be plain names");
        const std::string key = kv.first.Scalar();
        const std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
        if (out->contains(key))
          return At(doc.name, kv.first.Mark(), absl::StrCat(child, " is given twice"));
        if (kv.first.Mark().line >= 0) doc.lines[child] = kv.first.Mark().line + 1;
        json v;
        FJORD_RETURN_IF_ERROR(Convert(kv.second, child, doc, &v, depth + 1));
        if (kv.first.Mark().line >= 0)
          doc.lines[child] = kv.first.Mark().line + 1;  // the key's line
        (*out)[key] = std::move(v);
      }
      return absl::OkStatus();
    }
    default:
      return At(doc.name, node.Mark(), "unsupported YAML node");
  }
}

}  // namespace

absl::StatusOr<JobDocument> ParseJobYaml(const std::string& text, const std::string& name,
                                         const std::string& base_dir) {
  JobDocument doc;
  doc.name = name;
  doc.base_dir = base_dir;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return At(name, e.mark, absl::StrCat("malformed YAML: ", e.msg));
  }
  if (root.IsNull())
    return At(name, YAML::Mark::null_mark(),
              "the file is empty: expected a job (model:, training_file:, ...)");
  if (!root.IsMap())
    return At(name, root.Mark(), "expected a mapping of job fields (model:, training_file:, ...)");
  try {
    FJORD_RETURN_IF_ERROR(Convert(root, "", doc, &doc.body, 0));
  } catch (const YAML::Exception& e) {
    return At(name, e.mark, e.msg);
  }
  return doc;
}

absl::StatusOr<JobDocument> LoadJobFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    if (errno == ENOENT)
      return absl::NotFoundError(absl::StrCat("job file ", path, " does not exist"));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream s;
  s << f.rdbuf();
  const size_t slash = path.find_last_of('/');
  return ParseJobYaml(s.str(), path, slash == std::string::npos ? "." : path.substr(0, slash));
}

void SetField(JobDocument& doc, const std::string& dotted, json value) {
  json* node = &doc.body;
  std::vector<std::string> parts = absl::StrSplit(dotted, '.');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    json& next = (*node)[parts[i]];
    if (!next.is_object()) next = json::object();
    node = &next;
  }
  (*node)[parts.back()] = std::move(value);
  doc.lines.erase(dotted);
}

absl::Status NormalizeSuffix(JobDocument& doc) {
  if (!doc.body.is_object() || !doc.body.contains("suffix")) return absl::OkStatus();
  json suffix = doc.body["suffix"];
  doc.body.erase("suffix");
  if (suffix.is_null()) return absl::OkStatus();
  if (!suffix.is_string()) {
    return Locate(protocol::InvalidArgument("suffix must be a string", "suffix"), doc);
  }
  json& md = doc.body["metadata"];
  if (md.is_null()) md = json::object();
  if (md.is_object()) md["suffix"] = suffix;
  if (doc.lines.count("suffix")) doc.lines["metadata.suffix"] = doc.lines["suffix"];
  return absl::OkStatus();
}

absl::Status Locate(const absl::Status& status, const JobDocument& doc) {
  if (status.ok()) return status;
  const std::string param = protocol::ParamOf(status);
  // The field itself, else its closest parent with a line.
  std::string p = param;
  while (!p.empty()) {
    auto it = doc.lines.find(p);
    if (it != doc.lines.end()) {
      return protocol::Error(
          status.code(), absl::StrCat(doc.name, ":", it->second, ": ", status.message()), param);
    }
    const size_t dot = p.find_last_of('.');
    p = dot == std::string::npos ? "" : p.substr(0, dot);
  }
  if (!doc.name.empty()) {
    return protocol::Error(status.code(), absl::StrCat(doc.name, ": ", status.message()), param);
  }
  return status;
}

absl::StatusOr<protocol::JobSpec> ValidateJob(const JobDocument& doc) {
  absl::StatusOr<protocol::JobSpec> spec = protocol::JobSpecFromJson(doc.body);
  if (!spec.ok()) return Locate(spec.status(), doc);
  return spec;
}

}  // namespace fjord::cli
