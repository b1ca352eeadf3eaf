#include "daemon/server/commands.h"

#include "absl/strings/str_cat.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/protocol.h"
#include "daemon/server/sessions.h"
#include "daemon/util/log.h"

namespace fjord::daemon {

const std::map<std::string, Handler>& CommandTable() {
  static const auto* table = new std::map<std::string, Handler>{
      {protocol::kPing, HandlePing},
      {protocol::kModelList, HandleModelList},
      {protocol::kJobCreate, HandleJobCreate},
      {protocol::kJobGet, HandleJobGet},
      {protocol::kJobList, HandleJobList},
      {protocol::kJobCancel, HandleJobCancel},
      {protocol::kJobPause, HandleJobPause},
      {protocol::kJobResume, HandleJobResume},
      {protocol::kJobEvents, HandleJobEvents},
      {protocol::kJobSubscribe, HandleJobSubscribe},
      {protocol::kJobCheckpoints, HandleJobCheckpoints},
      {protocol::kJobDelete, HandleJobDelete},
      {protocol::kFileUploadBegin, HandleUploadBegin},
      {protocol::kFileUploadChunk, HandleUploadChunk},
      {protocol::kFileUploadFinish, HandleUploadFinish},
      {protocol::kFileList, HandleFileList},
      {protocol::kFileDelete, HandleFileDelete},
      {protocol::kAdapterFiles, HandleAdapterFiles},
      {protocol::kAdapterDownload, HandleAdapterDownload},
      {protocol::kReportFiles, HandleReportFiles},
      {protocol::kReportDownload, HandleReportDownload},
  };
  return *table;
}

void Dispatch(DaemonContext& ctx, const Request& rq, const std::string& command) {
  auto handler = CommandTable().find(command);
  absl::StatusOr<Reply> reply =
      handler == CommandTable().end()
          ? absl::StatusOr<Reply>(protocol::Error(absl::StatusCode::kUnimplemented,
                                                  absl::StrCat("unknown command '", command, "'"),
                                                  "command"))
          : handler->second(ctx, rq);
  if (reply.ok()) {
    if (reply->body)
      ctx.sessions->Send(rq.identity, protocol::OkReply(rq.request_id, std::move(*reply->body)));
    if (reply->chunk) ctx.sessions->SendChunk(rq.identity, *reply->chunk);
  } else {
    if (reply.status().code() == absl::StatusCode::kInternal) {
      LogError("request failed",
               {{"command", command}, {"error", std::string(reply.status().message())}});
    }
    ctx.sessions->Send(rq.identity, protocol::ErrorReply(rq.request_id, reply.status()));
  }
  const char* code = reply.ok() ? "OK" : protocol::CodeName(reply.status().code());
  ctx.metrics->Add("fjord_requests_total",
                   absl::StrCat("command=\"", command, "\",code=\"", code, "\""));
}

}  // namespace fjord::daemon
