// Reading tokenizer.json fields with errors that name the field's path
// ("pre_tokenizer.pretokenizers[0].pattern: expected a string, got number").
// Internal to runtime/tokenizer.
#ifndef FJORD_RUNTIME_TOKENIZER_JSON_FIELDS_H_
#define FJORD_RUNTIME_TOKENIZER_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace fjord::tokenizer::internal {

using Json = nlohmann::json;

// "a.b" (or "b" when `path` is empty) and "a[3]".
std::string JoinPath(absl::string_view path, absl::string_view key);
std::string IndexPath(absl::string_view path, size_t index);

// InvalidArgument "PATH: MESSAGE".
absl::Status FieldError(absl::string_view path, absl::string_view message);

// "string", "number", "object", ... for messages.
const char* JsonTypeName(const Json& value);

// object[key], or nullptr when the key is absent or null. `object` must be an
// object.
const Json* FindField(const Json& object, const char* key);

// Required string / optional string (absent or null -> nullopt).
absl::StatusOr<std::string> GetString(const Json& object, absl::string_view path, const char* key);
absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& object,
                                                             absl::string_view path,
                                                             const char* key);
// Optional boolean: absent or null -> `default_value`.
absl::StatusOr<bool> GetBool(const Json& object, absl::string_view path, const char* key,
                             bool default_value);
// Optional unsigned integer in [0, max]: absent or null -> `default_value`.
absl::StatusOr<int64_t> GetUint(const Json& object, absl::string_view path, const char* key,
                                int64_t default_value, int64_t max);
// A value that must be an unsigned integer in [0, max] (path names it).
absl::StatusOr<int64_t> AsUint(const Json& value, absl::string_view path, int64_t max);
// A value that must be a string.
absl::StatusOr<std::string> AsString(const Json& value, absl::string_view path);

// A short description of `value` for messages: scalars as JSON, containers by
// kind and size (never a recursive dump of untrusted nesting).
std::string Describe(const Json& value);

// Sequence components nest at most this deep (deeper is refused, so parsing
// and applying them cannot exhaust the stack).
inline constexpr int kMaxComponentDepth = 16;
absl::Status CheckDepth(absl::string_view path, int depth);

// Checks `value` is an object with a string "type"; returns the type.
absl::StatusOr<std::string> GetType(const Json& value, absl::string_view path);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_JSON_FIELDS_H_
