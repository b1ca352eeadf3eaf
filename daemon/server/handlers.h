// fjordd's request handlers, one function per command, grouped by the
// resource they act on (docs/protocol.md §5):
//   node_handlers.cc     ping, model.list
//   job_handlers.cc      job.create/get/list/cancel/pause/resume/events/
//                        subscribe/checkpoints/delete
//   file_handlers.cc     file.upload.begin/chunk/finish, file.list/delete
//   adapter_handlers.cc  adapter.files, adapter.download, report.files, report.download
// commands.cc maps each command name to its handler and is the one place
// that replies and counts (fjord_requests_total).
//
// A handler reads its request's fields with a FieldReader (unknown fields are
// INVALID_ARGUMENT), acts through the DaemonContext and returns the reply's
// body or an error status. Handlers run on the server loop's thread only.
#ifndef FJORD_DAEMON_SERVER_HANDLERS_H_
#define FJORD_DAEMON_SERVER_HANDLERS_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "daemon/auth/keys.h"
#include "daemon/jobs/lifecycle.h"
#include "daemon/jobs/store.h"
#include "daemon/metrics/metrics.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/json_reader.h"
#include "daemon/protocol/messages.h"
#include "daemon/server/config.h"
#include "daemon/storage/storage.h"
#include "daemon/storage/tenant_areas.h"
#include "daemon/util/clock.h"
#include "daemon/worker/workers.h"

namespace fjord::daemon {

class Sessions;
class Uploads;

// One request as the loop decoded and authenticated it.
struct Request {
  std::string identity;  // the peer's ZeroMQ routing id
  std::string request_id;
  Principal principal;
  const nlohmann::json* body = nullptr;
  const std::optional<std::string>* data = nullptr;
};

// What a handler answers: a body for an OK FINAL reply, a whole message of
// its own (adapter.download's chunk, sent without a copy), or nothing
// (job.subscribe: the stream replies by itself).
struct Reply {
  std::optional<nlohmann::json> body;
  std::optional<protocol::ServerMessage> chunk;
  static Reply Body(nlohmann::json b) { return Reply{std::move(b), std::nullopt}; }
  static Reply Chunk(protocol::ServerMessage m) { return Reply{std::nullopt, std::move(m)}; }
  static Reply Streaming() { return Reply{}; }
};

// Everything a handler may act on; none of it owned. Adapter listings are
// cached per job (hashing a large adapter once).
struct DaemonContext {
  const DaemonConfig* config = nullptr;
  Clock* clock = nullptr;
  JobStore* store = nullptr;
  Storage* storage = nullptr;
  TenantAreas* tenants = nullptr;
  JobLifecycle* jobs = nullptr;
  Workers* workers = nullptr;
  Metrics* metrics = nullptr;
  Uploads* uploads = nullptr;
  Sessions* sessions = nullptr;
  std::map<std::string, std::vector<protocol::AdapterFile>>* adapter_cache = nullptr;
  // OK while the storage root is usable; UNAVAILABLE saying why otherwise.
  std::function<absl::Status()> storage_available;
};

using Handler = std::function<absl::StatusOr<Reply>(DaemonContext&, const Request&)>;

// ---- shared by the handlers -------------------------------------------------

// The tenant a request acts for: its "tenant" field (an admin may name any;
// anyone else only their own), the principal's tenant when absent.
absl::StatusOr<std::string> ActingTenant(const Principal& p, protocol::FieldReader& r);
// The job if the principal may see it; NotFound (param job_id) otherwise,
// exactly as for an id that does not exist (no probing).
absl::StatusOr<protocol::Job> JobFor(DaemonContext& ctx, const Principal& p, const std::string& id);
// The opening of every handler that acts on one job: reads "job_id", then
// the handler's own fields (`more`), then "tenant", refuses unknown fields,
// and returns the job the principal may see.
absl::StatusOr<protocol::Job> ReadJobRequest(
    DaemonContext& ctx, const Request& rq,
    const std::function<absl::Status(protocol::FieldReader&)>& more = nullptr);
// A training or validation file a job names (a file id, or a path inside
// the tenant's area), resolved to its path on the storage root.
absl::StatusOr<std::string> ResolveDataFile(DaemonContext& ctx, const std::string& tenant,
                                            const std::string& name, const char* param);

// ---- the handlers -------------------------------------------------------------

absl::StatusOr<Reply> HandlePing(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleModelList(DaemonContext& ctx, const Request& rq);

absl::StatusOr<Reply> HandleJobCreate(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobGet(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobList(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobCancel(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobPause(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobResume(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobEvents(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobSubscribe(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobCheckpoints(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleJobDelete(DaemonContext& ctx, const Request& rq);

absl::StatusOr<Reply> HandleUploadBegin(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleUploadChunk(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleUploadFinish(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleFileList(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleFileDelete(DaemonContext& ctx, const Request& rq);

absl::StatusOr<Reply> HandleAdapterFiles(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleAdapterDownload(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleReportFiles(DaemonContext& ctx, const Request& rq);
absl::StatusOr<Reply> HandleReportDownload(DaemonContext& ctx, const Request& rq);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_HANDLERS_H_
