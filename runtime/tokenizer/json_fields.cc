#include "runtime/tokenizer/json_fields.h"

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {

std::string JoinPath(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string IndexPath(absl::string_view path, size_t index) {
  return absl::StrCat(path, "[", index, "]");
}

absl::Status FieldError(absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

const char* JsonTypeName(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return "number";
    default:
      return "binary";
  }
}

const Json* FindField(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> AsString(const Json& value, absl::string_view path) {
  if (!value.is_string()) {
    return FieldError(path, absl::StrCat("expected a string, got ", JsonTypeName(value)));
  }
  return value.get<std::string>();
}

absl::StatusOr<std::string> GetString(const Json& object, absl::string_view path, const char* key) {
  const Json* v = FindField(object, key);
  if (v == nullptr) return FieldError(JoinPath(path, key), "missing");
  return AsString(*v, JoinPath(path, key));
}

absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& object,
                                                             absl::string_view path,
                                                             const char* key) {
  const Json* v = FindField(object, key);
  if (v == nullptr) return std::optional<std::string>();
  FJORD_ASSIGN_OR_RETURN(std::string s, AsString(*v, JoinPath(path, key)));
  return std::optional<std::string>(std::move(s));
}

absl::StatusOr<bool> GetBool(const Json& object, absl::string_view path, const char* key,
                             bool default_value) {
  const Json* v = FindField(object, key);
  if (v == nullptr) return default_value;
  if (!v->is_boolean()) {
    return FieldError(JoinPath(path, key),
                      absl::StrCat("expected a boolean, got ", JsonTypeName(*v)));
  }
  return v->get<bool>();
}

absl::StatusOr<int64_t> AsUint(const Json& value, absl::string_view path, int64_t max) {
  if (!value.is_number_integer()) {
    return FieldError(path, absl::StrCat("expected a non-negative integer, got ",
                                         value.is_number() ? value.dump() : JsonTypeName(value)));
  }
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(max)) {
      return FieldError(path, absl::StrCat(u, " is out of range (at most ", max, ")"));
    }
    return static_cast<int64_t>(u);
  }
  const int64_t i = value.get<int64_t>();
  if (i < 0 || i > max) {
    return FieldError(path, absl::StrCat(i, " is out of range (0 to ", max, ")"));
  }
  return i;
}

absl::StatusOr<int64_t> GetUint(const Json& object, absl::string_view path, const char* key,
                                int64_t default_value, int64_t max) {
  const Json* v = FindField(object, key);
  if (v == nullptr) return default_value;
  return AsUint(*v, JoinPath(path, key), max);
}

std::string Describe(const Json& value) {
  if (value.is_array()) return absl::StrCat("an array of ", value.size());
  if (value.is_object()) return absl::StrCat("an object of ", value.size(), " fields");
  std::string s = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

absl::Status CheckDepth(absl::string_view path, int depth) {
  if (depth > kMaxComponentDepth) {
    return FieldError(path, absl::StrCat("Sequences nested deeper than ", kMaxComponentDepth));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetType(const Json& value, absl::string_view path) {
  if (!value.is_object()) {
    return FieldError(path, absl::StrCat("expected an object, got ", JsonTypeName(value)));
  }
  return GetString(value, path, "type");
}

}  // namespace fjord::tokenizer::internal
