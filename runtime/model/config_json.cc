// config.json's field readers (config_json.h).
#include "runtime/model/config_json.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::model::config_internal {

// A short rendering of a JSON value for error messages.
std::string Show(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

absl::Status FieldError(absl::string_view field, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("field '", field, "': ", msg));
}

// The value of obj[key], or nullptr when absent or null.
const Json* Find(const Json& obj, const std::string& key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<int64_t> AsInt(const Json& v, absl::string_view field) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FieldError(field, absl::StrCat("integer out of range: ", Show(v)));
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
      return static_cast<int64_t>(d);
    }
  }
  return FieldError(field, absl::StrCat("must be an integer, got ", Show(v)));
}

// Optional integer field; null counts as absent.
absl::StatusOr<std::optional<int64_t>> GetInt(const Json& obj, const std::string& key,
                                              absl::string_view field) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<int64_t>();
  FJORD_ASSIGN_OR_RETURN(int64_t i, AsInt(*v, field));
  return std::optional<int64_t>(i);
}

absl::StatusOr<int64_t> RequireInt(const Json& obj, const std::string& key) {
  FJORD_ASSIGN_OR_RETURN(std::optional<int64_t> v, GetInt(obj, key, key));
  if (!v.has_value()) return FieldError(key, "is required");
  return *v;
}

absl::StatusOr<std::optional<double>> GetDouble(const Json& obj, const std::string& key,
                                                absl::string_view field) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return FieldError(field, absl::StrCat("must be a number, got ", Show(*v)));
  return std::optional<double>(v->get<double>());
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const std::string& key) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean())
    return FieldError(key, absl::StrCat("must be true or false, got ", Show(*v)));
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const std::string& key,
                                                     absl::string_view field) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return FieldError(field, absl::StrCat("must be a string, got ", Show(*v)));
  return std::optional<std::string>(v->get<std::string>());
}

// A token id field: an integer, a list of integers, or null.
absl::StatusOr<std::vector<int64_t>> GetTokenIds(const Json& obj, const std::string& key) {
  std::vector<int64_t> ids;
  const Json* v = Find(obj, key);
  if (v == nullptr) return ids;
  if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i) {
      FJORD_ASSIGN_OR_RETURN(int64_t id, AsInt((*v)[i], absl::StrCat(key, "[", i, "]")));
      ids.push_back(id);
    }
    return ids;
  }
  if (!v->is_number()) {
    return FieldError(key,
                      absl::StrCat("must be an integer or a list of integers, got ", Show(*v)));
  }
  FJORD_ASSIGN_OR_RETURN(int64_t id, AsInt(*v, key));
  ids.push_back(id);
  return ids;
}

absl::StatusOr<std::optional<int64_t>> GetSingleTokenId(const Json& obj, const std::string& key) {
  FJORD_ASSIGN_OR_RETURN(std::vector<int64_t> ids, GetTokenIds(obj, key));
  if (ids.empty()) return std::optional<int64_t>();
  // A list (seen for bos in a few configs): the first id is the one prepended.
  return std::optional<int64_t>(ids.front());
}

}  // namespace fjord::model::config_internal
