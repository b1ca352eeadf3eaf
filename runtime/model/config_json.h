// Private to runtime/model's config library: reading config.json's fields
// with errors that name them ("field 'rope_scaling.factor': must be a
// number, got \"2\""), and the sections config.cc hands off (RoPE, Gemma 3's
// own fields). Not a public header.
#ifndef FJORD_RUNTIME_MODEL_CONFIG_JSON_H_
#define FJORD_RUNTIME_MODEL_CONFIG_JSON_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/model/config.h"

namespace fjord::model::config_internal {

using Json = nlohmann::json;

// A short rendering of a JSON value for error messages.
std::string Show(const Json& v);
// InvalidArgument "field 'FIELD': MSG".
absl::Status FieldError(absl::string_view field, absl::string_view msg);
// The value of obj[key], or nullptr when absent or null.
const Json* Find(const Json& obj, const std::string& key);
// Readers of one field: absent or null gives nullopt; a value of the wrong
// type or out of range an error naming `field`.
absl::StatusOr<int64_t> AsInt(const Json& v, absl::string_view field);
absl::StatusOr<std::optional<int64_t>> GetInt(const Json& obj, const std::string& key,
                                              absl::string_view field);
absl::StatusOr<int64_t> RequireInt(const Json& obj, const std::string& key);
absl::StatusOr<std::optional<double>> GetDouble(const Json& obj, const std::string& key,
                                                absl::string_view field);
absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const std::string& key);
absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const std::string& key,
                                                     absl::string_view field);
// "eos_token_id": an integer or a list of them (empty when absent).
absl::StatusOr<std::vector<int64_t>> GetTokenIds(const Json& obj, const std::string& key);
absl::StatusOr<std::optional<int64_t>> GetSingleTokenId(const Json& obj, const std::string& key);

// Sets c.rope_theta, c.rope_scaling, c.partial_rotary_factor and (Gemma 3)
// c.local_rope_theta from v5's "rope_parameters" or v4's fields; c.family
// and c.max_position_embeddings must be set.
absl::Status ParseRope(const Json& root, ModelConfig& c);
// Gemma 3's fields past the common ones (c.head_dim, c.hidden_size and
// c.num_hidden_layers are set).
absl::Status ParseGemma3(const Json& root, bool attention_bias, ModelConfig& c);

}  // namespace fjord::model::config_internal

#endif  // FJORD_RUNTIME_MODEL_CONFIG_JSON_H_
