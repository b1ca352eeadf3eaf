// Protocol errors as absl::Status: the wire's error codes (docs/protocol.md
// §4) map onto absl::StatusCode, and the request field at fault ("param")
// travels as a status payload so it survives FJORD_RETURN_IF_ERROR chains.
#ifndef FJORD_DAEMON_PROTOCOL_ERRORS_H_
#define FJORD_DAEMON_PROTOCOL_ERRORS_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fjord::protocol {

// An error status with `param` attached ("" = none).
absl::Status Error(absl::StatusCode code, absl::string_view message, absl::string_view param = "");
inline absl::Status InvalidArgument(absl::string_view message, absl::string_view param = "") {
  return Error(absl::StatusCode::kInvalidArgument, message, param);
}

// The param attached to `status` ("" when none).
std::string ParamOf(const absl::Status& status);
// `status` with `param` attached (replacing any).
absl::Status WithParam(absl::Status status, absl::string_view param);

// The wire name of a code: "INVALID_ARGUMENT", ... Codes outside the table of
// docs/protocol.md §4 (e.g. kDataLoss, kAborted) are sent as "INTERNAL".
const char* CodeName(absl::StatusCode code);
// The code for a wire name; false for a name outside the table.
bool CodeFromName(absl::string_view name, absl::StatusCode* code);

// {"code", "message", "param"} (param null when empty).
nlohmann::json ErrorToJson(const absl::Status& status);
// The status a reply with status frame `code_name` and body `body` stands for.
// A body without a well-formed "error" object still gives the code, with a
// message saying so.
absl::Status StatusFromReply(absl::string_view code_name, const nlohmann::json& body);

// json::dump that never throws: compact, invalid UTF-8 replaced by U+FFFD.
// Object keys come out sorted (nlohmann's std::map ordering).
std::string DumpJson(const nlohmann::json& value);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_ERRORS_H_
