// The node: ping, model.list; and what every handler shares.
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/protocol.h"
#include "daemon/server/handlers.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::FieldReader;
using protocol::Job;

namespace {
constexpr char kVersion[] = "0.1.0";
}  // namespace

absl::StatusOr<std::string> ActingTenant(const Principal& p, FieldReader& r) {
  std::string tenant;
  FJORD_RETURN_IF_ERROR(r.String("tenant", &tenant, false, 64));
  if (tenant.empty()) return p.tenant;
  if (!protocol::ValidTenantName(tenant))
    return protocol::InvalidArgument("tenant is not a valid tenant name", "tenant");
  if (tenant != p.tenant && !p.admin) {
    return protocol::Error(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("principal '", p.key_name, "' may act only for tenant '", p.tenant, "'"),
        "tenant");
  }
  return tenant;
}

absl::StatusOr<Job> JobFor(DaemonContext& ctx, const Principal& p, const std::string& id) {
  absl::StatusOr<Job> j = ctx.jobs->Load(id);
  if (!j.ok() || (!p.admin && j->tenant != p.tenant)) {
    return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", id, "'"),
                           "job_id");
  }
  return j;
}

absl::StatusOr<Job> ReadJobRequest(DaemonContext& ctx, const Request& rq,
                                   const std::function<absl::Status(FieldReader&)>& more) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  std::string id;
  FJORD_RETURN_IF_ERROR(r.String("job_id", &id, /*required=*/true, 64));
  if (more) {
    FJORD_RETURN_IF_ERROR(more(r));
  }
  FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
  FJORD_RETURN_IF_ERROR(r.Finish());
  return JobFor(ctx, rq.principal, id);
}

absl::StatusOr<std::string> ResolveDataFile(DaemonContext& ctx, const std::string& tenant,
                                            const std::string& name, const char* param) {
  if (name.rfind("file-", 0) == 0) {
    absl::StatusOr<protocol::FileInfo> f = ctx.store->GetFile(tenant, name);
    if (!f.ok())
      return protocol::InvalidArgument(absl::StrCat(param, ": no uploaded file '", name, "'"),
                                       param);
    return ctx.storage->ResolveTenantFile(tenant, f->path, param);
  }
  return ctx.storage->ResolveTenantFile(tenant, name, param);
}

absl::StatusOr<Reply> HandlePing(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  FJORD_RETURN_IF_ERROR(r.Finish());
  const DaemonConfig& c = *ctx.config;
  return Reply::Body(json{{"protocol", protocol::kProtocolVersion},
                          {"daemon", "fjordd"},
                          {"version", kVersion},
                          {"node", c.node_name},
                          {"time_ms", ctx.clock->WallMs()},
                          {"heartbeat_interval_ms", c.limits.heartbeat_interval_ms},
                          {"liveness", protocol::kHeartbeatLiveness},
                          {"principal",
                           {{"tenant", rq.principal.tenant},
                            {"role", rq.principal.role()},
                            {"key_name", rq.principal.key_name}}},
                          {"limits",
                           {{"max_message_bytes", c.limits.max_message_bytes},
                            {"max_body_bytes", c.limits.max_body_bytes},
                            {"upload_chunk_bytes", c.limits.upload_chunk_bytes},
                            {"max_upload_bytes", c.limits.max_upload_bytes}}}});
}

absl::StatusOr<Reply> HandleModelList(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  FJORD_RETURN_IF_ERROR(r.Finish());
  json models = json::array();
  for (const auto& [name, path] : ctx.config->models) models.push_back({{"name", name}});
  return Reply::Body(json{{"models", models}});
}

}  // namespace fjord::daemon
