#include "daemon/protocol/json_reader.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"

namespace fjord::protocol {

using nlohmann::json;

int JsonNestingDepth(absl::string_view text) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escape = false;
  for (char c : text) {
    if (in_string) {
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']')
      --depth;
  }
  return max_depth;
}

absl::StatusOr<FieldReader> FieldReader::Make(const json& value, std::string path) {
  if (!value.is_object()) {
    return InvalidArgument(absl::StrCat(path.empty() ? "body" : path,
                                        " must be a JSON object, got ", value.type_name()),
                           path);
  }
  return FieldReader(&value, std::move(path));
}

bool FieldReader::Has(absl::string_view key) const {
  auto it = object_->find(std::string(key));
  return it != object_->end() && !it->is_null();
}

std::string FieldReader::PathOf(absl::string_view key) const {
  return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
}

const json* FieldReader::Find(absl::string_view key) {
  seen_.insert(std::string(key));
  auto it = object_->find(std::string(key));
  if (it == object_->end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status FieldReader::String(absl::string_view key, std::string* out, bool required,
                                 size_t max_bytes, bool allow_empty) {
  const json* v = Find(key);
  const std::string p = PathOf(key);
  if (v == nullptr) {
    return required ? InvalidArgument(absl::StrCat(p, " is required"), p) : absl::OkStatus();
  }
  if (!v->is_string()) {
    return InvalidArgument(absl::StrCat(p, " must be a string, got ", v->type_name()), p);
  }
  const std::string& s = v->get_ref<const std::string&>();
  if (s.empty() && !allow_empty) return InvalidArgument(absl::StrCat(p, " must not be empty"), p);
  if (s.size() > max_bytes) {
    return InvalidArgument(absl::StrCat(p, " is ", s.size(), " bytes, limit ", max_bytes), p);
  }
  if (s.find('\0') != std::string::npos) {
    return InvalidArgument(absl::StrCat(p, " must not contain NUL"), p);
  }
  *out = s;
  return absl::OkStatus();
}

absl::Status FieldReader::Int(absl::string_view key, int64_t* out, int64_t min, int64_t max,
                              bool required) {
  const json* v = Find(key);
  const std::string p = PathOf(key);
  if (v == nullptr) {
    return required ? InvalidArgument(absl::StrCat(p, " is required"), p) : absl::OkStatus();
  }
  int64_t x = 0;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return InvalidArgument(absl::StrCat(p, " is out of range [", min, ", ", max, "]"), p);
    }
    x = v->get<int64_t>();
  } else if (v->is_number_float()) {
    const double d = v->get<double>();
    if (!(std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15)) {
      return InvalidArgument(absl::StrCat(p, " must be an integer, got ", v->dump()), p);
    }
    x = static_cast<int64_t>(d);
  } else {
    return InvalidArgument(absl::StrCat(p, " must be an integer, got ", v->type_name()), p);
  }
  if (x < min || x > max) {
    return InvalidArgument(absl::StrCat(p, " must be in [", min, ", ", max, "], got ", x), p);
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status FieldReader::Int(absl::string_view key, int* out, int min, int max, bool required) {
  int64_t x = *out;
  absl::Status s = Int(key, &x, min, max, required);
  if (s.ok()) *out = static_cast<int>(x);
  return s;
}

absl::Status FieldReader::Number(absl::string_view key, double* out, double min, double max,
                                 bool min_exclusive, bool max_exclusive) {
  const json* v = Find(key);
  const std::string p = PathOf(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) {
    return InvalidArgument(absl::StrCat(p, " must be a number, got ", v->type_name()), p);
  }
  const double x = v->get<double>();
  const bool low = min_exclusive ? !(x > min) : !(x >= min);
  const bool high = max_exclusive ? !(x < max) : !(x <= max);
  if (!std::isfinite(x) || low || high) {
    return InvalidArgument(absl::StrCat(p, " must be in ", min_exclusive ? "(" : "[", min, ", ",
                                        max, max_exclusive ? ")" : "]", ", got ", v->dump()),
                           p);
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status FieldReader::Bool(absl::string_view key, bool* out) {
  const json* v = Find(key);
  const std::string p = PathOf(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) {
    return InvalidArgument(absl::StrCat(p, " must be true or false, got ", v->type_name()), p);
  }
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status FieldReader::StringList(absl::string_view key, std::vector<std::string>* out,
                                     size_t max_items, size_t max_bytes) {
  const json* v = Find(key);
  const std::string p = PathOf(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_array()) {
    return InvalidArgument(absl::StrCat(p, " must be an array of strings, got ", v->type_name()),
                           p);
  }
  if (v->size() > max_items) {
    return InvalidArgument(absl::StrCat(p, " has ", v->size(), " items, limit ", max_items), p);
  }
  std::vector<std::string> items;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    const std::string pi = absl::StrCat(p, "[", i, "]");
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      return InvalidArgument(absl::StrCat(pi, " must be a non-empty string"), p);
    }
    if (e.get_ref<const std::string&>().size() > max_bytes) {
      return InvalidArgument(absl::StrCat(pi, " is longer than ", max_bytes, " bytes"), p);
    }
    items.push_back(e.get<std::string>());
  }
  *out = std::move(items);
  return absl::OkStatus();
}

absl::StatusOr<const json*> FieldReader::Object(absl::string_view key) {
  const json* v = Find(key);
  const std::string p = PathOf(key);
  if (v == nullptr) return nullptr;
  if (!v->is_object()) {
    return InvalidArgument(absl::StrCat(p, " must be an object, got ", v->type_name()), p);
  }
  return v;
}

absl::Status FieldReader::Finish() const {
  for (auto it = object_->begin(); it != object_->end(); ++it) {
    if (seen_.count(it.key()) == 0) {
      const std::string p = PathOf(it.key());
      return InvalidArgument(absl::StrCat("unknown field '", p, "'"), p);
    }
  }
  return absl::OkStatus();
}

}  // namespace fjord::protocol
