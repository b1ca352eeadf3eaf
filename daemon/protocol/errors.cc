#include "daemon/protocol/errors.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace fjord::protocol {
namespace {

constexpr char kParamPayload[] = "fjord.dev/param";

struct CodeRow {
  absl::StatusCode code;
  const char* name;
};
constexpr CodeRow kCodes[] = {
    {absl::StatusCode::kOk, "OK"},
    {absl::StatusCode::kInvalidArgument, "INVALID_ARGUMENT"},
    {absl::StatusCode::kNotFound, "NOT_FOUND"},
    {absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS"},
    {absl::StatusCode::kPermissionDenied, "PERMISSION_DENIED"},
    {absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED"},
    {absl::StatusCode::kResourceExhausted, "RESOURCE_EXHAUSTED"},
    {absl::StatusCode::kFailedPrecondition, "FAILED_PRECONDITION"},
    {absl::StatusCode::kUnimplemented, "UNIMPLEMENTED"},
    {absl::StatusCode::kUnavailable, "UNAVAILABLE"},
    {absl::StatusCode::kInternal, "INTERNAL"},
    {absl::StatusCode::kDeadlineExceeded, "DEADLINE_EXCEEDED"},
};

}  // namespace

absl::Status Error(absl::StatusCode code, absl::string_view message, absl::string_view param) {
  absl::Status s(code, message);
  if (!param.empty()) s.SetPayload(kParamPayload, absl::Cord(param));
  return s;
}

std::string ParamOf(const absl::Status& status) {
  auto p = status.GetPayload(kParamPayload);
  return p ? std::string(*p) : std::string();
}

absl::Status WithParam(absl::Status status, absl::string_view param) {
  if (status.ok()) return status;
  status.ErasePayload(kParamPayload);
  if (!param.empty()) status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

const char* CodeName(absl::StatusCode code) {
  for (const CodeRow& r : kCodes) {
    if (r.code == code) return r.name;
  }
  return "INTERNAL";
}

bool CodeFromName(absl::string_view name, absl::StatusCode* code) {
  for (const CodeRow& r : kCodes) {
    if (name == r.name) {
      *code = r.code;
      return true;
    }
  }
  return false;
}

nlohmann::json ErrorToJson(const absl::Status& status) {
  absl::StatusCode code = status.code();
  absl::StatusCode unused;
  if (!CodeFromName(CodeName(code), &unused) || code == absl::StatusCode::kOk) {
    code = absl::StatusCode::kInternal;
  }
  const std::string param = ParamOf(status);
  return nlohmann::json{{"code", CodeName(code)},
                        {"message", std::string(status.message())},
                        {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)}};
}

absl::Status StatusFromReply(absl::string_view code_name, const nlohmann::json& body) {
  absl::StatusCode code;
  if (!CodeFromName(code_name, &code)) {
    return absl::InternalError(absl::StrCat("reply has unknown status '", code_name, "'"));
  }
  if (code == absl::StatusCode::kOk) return absl::OkStatus();
  std::string message = "(the reply carried no error message)";
  std::string param;
  if (body.is_object()) {
    auto e = body.find("error");
    if (e != body.end() && e->is_object()) {
      auto m = e->find("message");
      if (m != e->end() && m->is_string()) message = m->get<std::string>();
      auto p = e->find("param");
      if (p != e->end() && p->is_string()) param = p->get<std::string>();
    }
  }
  return Error(code, message, param);
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace fjord::protocol
