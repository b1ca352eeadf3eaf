// Files: file.upload.begin/chunk/finish, file.list, file.delete
// (docs/protocol.md §5). An upload is written as it comes to
// files/.upload-<node>-<id> (files/ is root's: no worker can plant anything
// there), checked against its announced size and SHA-256, then renamed to
// files/<file id>.
#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/server/handlers.h"
#include "daemon/server/uploads.h"
#include "daemon/util/log.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::FieldReader;

namespace {

// file.list pages: at most this many files each.
constexpr int kMaxFileListLimit = 1000;

std::string RandomId(const char* prefix) {
  uint8_t raw[8];
  randombytes_buf(raw, sizeof(raw));
  return absl::StrCat(prefix,
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(raw), 8)));
}

// fsync of the tenant's files/ (its renames and removals made durable).
void SyncFilesDir(DaemonContext& ctx, const std::string& tenant) {
  absl::StatusOr<SafeDir> area = ctx.storage->OpenTenantDir(tenant);
  absl::StatusOr<SafeDir> files = area.ok() ? area->OpenDir("files") : area.status();
  if (files.ok()) (void)files->Sync();
}

}  // namespace

absl::StatusOr<Reply> HandleUploadBegin(DaemonContext& ctx, const Request& rq) {
  const DaemonConfig::Limits& limits = ctx.config->limits;
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  Upload u;
  int64_t bytes = 0;
  FJORD_RETURN_IF_ERROR(r.String("filename", &u.filename, true, 255));
  FJORD_RETURN_IF_ERROR(r.Int("bytes", &bytes, 0, INT64_MAX, /*required=*/true));
  FJORD_RETURN_IF_ERROR(r.String("sha256", &u.sha256, true, 64));
  FJORD_ASSIGN_OR_RETURN(u.tenant, ActingTenant(rq.principal, r));
  FJORD_RETURN_IF_ERROR(r.Finish());
  if (!ValidUploadFilename(u.filename)) {
    return protocol::InvalidArgument(
        "filename must be 1-255 bytes of UTF-8 without '/', control characters, line separators or "
        "bidi "
        "controls, '.' or '..'",
        "filename");
  }
  if (static_cast<uint64_t>(bytes) > limits.max_upload_bytes) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("the file is ", bytes, " bytes, the limit is ", limits.max_upload_bytes),
        "bytes");
  }
  if (u.sha256.size() != 64 ||
      u.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return protocol::InvalidArgument("sha256 must be 64 lower-case hex digits", "sha256");
  }
  if (ctx.uploads->CountFor(u.tenant) >= limits.max_uploads_per_tenant) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("at most ", limits.max_uploads_per_tenant, " uploads in progress per tenant"),
        "upload_id");
  }
  u.bytes = static_cast<uint64_t>(bytes);
  FJORD_RETURN_IF_ERROR(ctx.storage_available());
  FJORD_RETURN_IF_ERROR(ctx.tenants->EnsureTenant(u.tenant));
  FJORD_RETURN_IF_ERROR(ctx.tenants->CheckQuota(
      u.tenant, u.bytes, 1, "bytes", absl::StrCat("; this file needs ", u.bytes, " more")));
  const std::string id = RandomId("upl-");
  u.path = absl::StrCat(ctx.storage->FilesDir(u.tenant), "/", ctx.tenants->UploadFileName(id));
  u.fd =
      UniqueFd(::open(u.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
  if (!u.fd.valid())
    return absl::UnavailableError(absl::StrCat("cannot create the upload: ", std::strerror(errno)));
  u.last_ms = ctx.clock->NowMs();
  ctx.uploads->Add(id, std::move(u));
  return Reply::Body(json{{"upload_id", id}, {"chunk_bytes", limits.upload_chunk_bytes}});
}

absl::StatusOr<Reply> HandleUploadChunk(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  std::string id;
  int64_t offset = 0;
  FJORD_RETURN_IF_ERROR(r.String("upload_id", &id, true, 64));
  FJORD_RETURN_IF_ERROR(r.Int("offset", &offset, 0, INT64_MAX, /*required=*/true));
  FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
  FJORD_RETURN_IF_ERROR(r.Finish());
  if (!rq.data->has_value())
    return protocol::InvalidArgument("file.upload.chunk needs the chunk in frame 6", "data");
  const std::string& data = **rq.data;
  const size_t limit = ctx.config->limits.upload_chunk_bytes;
  if (data.size() > limit) {
    return protocol::Error(absl::StatusCode::kResourceExhausted,
                           absl::StrCat("chunk is ", data.size(), " bytes, limit ", limit), "data");
  }
  FJORD_ASSIGN_OR_RETURN(Upload * u, ctx.uploads->Find(rq.principal, id));
  const uint64_t off = static_cast<uint64_t>(offset);
  u->last_ms = ctx.clock->NowMs();
  if (off + data.size() <= u->received && off < u->received) {
    return Reply::Body(json{{"received", u->received}});  // a repeat of the last chunk
  }
  if (off != u->received) {
    return protocol::InvalidArgument(absl::StrCat("offset is ", off, ", expected ", u->received),
                                     "offset");
  }
  if (u->received + data.size() > u->bytes) {
    return protocol::InvalidArgument(
        absl::StrCat("the chunk goes past the announced size of ", u->bytes, " bytes"), "offset");
  }
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = ::write(u->fd.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string e = std::strerror(errno);
      ctx.uploads->Drop(id);
      return absl::UnavailableError(absl::StrCat("storage write failed: ", e));
    }
    done += static_cast<size_t>(n);
  }
  u->hasher.Update(data);
  u->received += data.size();
  return Reply::Body(json{{"received", u->received}});
}

absl::StatusOr<Reply> HandleUploadFinish(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  std::string id;
  FJORD_RETURN_IF_ERROR(r.String("upload_id", &id, true, 64));
  FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
  FJORD_RETURN_IF_ERROR(r.Finish());
  if (!ctx.uploads->Has(id)) {
    // Finished already (a retry after a lost reply)?
    absl::StatusOr<protocol::FileInfo> f = ctx.store->GetFileByUpload(tenant, id);
    if (f.ok()) return Reply::Body(protocol::FileInfoToJson(*f));
  }
  FJORD_ASSIGN_OR_RETURN(Upload * u, ctx.uploads->Find(rq.principal, id));
  if (u->received != u->bytes) {
    return protocol::Error(absl::StatusCode::kFailedPrecondition,
                           absl::StrCat("received ", u->received, " of ", u->bytes, " bytes"),
                           "upload_id");
  }
  const std::string got = u->hasher.FinalHex();
  if (got != u->sha256) {
    const std::string want = u->sha256;
    ctx.uploads->Drop(id);
    return protocol::InvalidArgument(
        absl::StrCat("the data's SHA-256 is ", got, ", the request said ", want,
                     "; the upload was dropped"),
        "sha256");
  }
  absl::StatusOr<WorkerIds> ids = ctx.tenants->IdsFor(u->tenant);
  if (!ids.ok() || (ids->gid && ::fchown(u->fd.get(), static_cast<uid_t>(-1), *ids->gid) != 0)) {
    const std::string why = ids.ok() ? std::strerror(errno) : std::string(ids.status().message());
    ctx.uploads->Drop(id);
    return absl::UnavailableError(absl::StrCat("chown of the upload failed: ", why));
  }
  if (::fsync(u->fd.get()) != 0) {
    ctx.uploads->Drop(id);
    return absl::UnavailableError("storage fsync failed");
  }
  u->fd.reset();
  protocol::FileInfo f;
  f.id = RandomId("file-");
  f.filename = u->filename;
  f.bytes = u->bytes;
  f.sha256 = got;
  f.created_at_ms = ctx.clock->WallMs();
  f.path = "files/" + f.id;
  const std::string final_path = absl::StrCat(ctx.storage->FilesDir(u->tenant), "/", f.id);
  if (::rename(u->path.c_str(), final_path.c_str()) != 0) {
    ctx.uploads->Drop(id);
    return absl::UnavailableError(absl::StrCat("storage rename failed: ", std::strerror(errno)));
  }
  const std::string file_tenant = u->tenant;
  SyncFilesDir(ctx, file_tenant);
  ctx.uploads->Finish(id);
  ctx.tenants->AddFile(file_tenant, f.bytes, +1);
  FJORD_RETURN_IF_ERROR(ctx.store->AddFile(file_tenant, f, id));
  LogInfo("file uploaded", {{"file", f.id}, {"tenant", file_tenant}, {"bytes", f.bytes}});
  return Reply::Body(protocol::FileInfoToJson(f));
}

absl::StatusOr<Reply> HandleFileList(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  int limit = kMaxFileListLimit;
  std::string after;
  FJORD_RETURN_IF_ERROR(r.Int("limit", &limit, 1, kMaxFileListLimit));
  FJORD_RETURN_IF_ERROR(r.String("after", &after, false, 64));
  FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
  FJORD_RETURN_IF_ERROR(r.Finish());
  FJORD_ASSIGN_OR_RETURN(std::vector<protocol::FileInfo> files,
                         ctx.store->ListFiles(tenant, limit + 1, after));
  const bool has_more = static_cast<int>(files.size()) > limit;
  if (has_more) files.resize(static_cast<size_t>(limit));
  json out = json::array();
  for (const protocol::FileInfo& f : files) out.push_back(protocol::FileInfoToJson(f));
  const Usage used = ctx.tenants->TenantUsage(tenant);
  return Reply::Body(json{{"files", out},
                          {"has_more", has_more},
                          {"usage_bytes", used.bytes},
                          {"quota_bytes", ctx.config->limits.max_tenant_storage_bytes},
                          {"usage_files", used.entries},
                          {"quota_files", ctx.config->limits.max_tenant_files}});
}

absl::StatusOr<Reply> HandleFileDelete(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  std::string id;
  FJORD_RETURN_IF_ERROR(r.String("file_id", &id, /*required=*/true, 64));
  FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
  FJORD_RETURN_IF_ERROR(r.Finish());
  FJORD_ASSIGN_OR_RETURN(protocol::FileInfo f, ctx.store->GetFile(tenant, id));
  const std::string as_path = "files/" + f.id;
  for (const auto& [job_id, job] : ctx.jobs->live()) {  // the jobs that have not ended
    if (job.tenant != tenant) continue;
    // Every file the job names: its training files, or an evaluation's
    // datasets and uploaded adapters.
    std::vector<std::pair<std::string, const std::string*>> named = {
        {"training_file", &job.spec.training_file},
        {"validation_file", &job.spec.validation_file},
        {"heldout_file", &job.spec.heldout_file}};
    for (size_t i = 0; i < job.spec.datasets.size(); ++i)
      named.push_back({absl::StrCat("datasets[", i, "]"), &job.spec.datasets[i]});
    for (size_t i = 0; i < job.spec.candidates.size(); ++i) {
      named.push_back({absl::StrCat("candidates[", i, "].adapter_config"),
                       &job.spec.candidates[i].adapter_config});
      named.push_back({absl::StrCat("candidates[", i, "].adapter_model"),
                       &job.spec.candidates[i].adapter_model});
    }
    for (const auto& [field, value] : named) {
      if (*value == f.id || *value == as_path) {
        return protocol::Error(absl::StatusCode::kFailedPrecondition,
                               absl::StrCat("file ", f.id, " is the ", field, " of job ", job_id,
                                            ", which is ", protocol::JobStatusName(job.status),
                                            ": cancel the job or wait until it ends"),
                               "file_id");
      }
    }
  }
  FJORD_RETURN_IF_ERROR(ctx.storage_available());
  // The file goes before its record: a crash in between leaves a record
  // whose delete can be repeated, never bytes that count against the quota
  // with no record to delete them by.
  const std::string path = absl::StrCat(ctx.storage->FilesDir(tenant), "/", f.id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::UnavailableError(absl::StrCat("cannot delete the file: ", std::strerror(errno)));
  }
  SyncFilesDir(ctx, tenant);
  ctx.tenants->AddFile(tenant, f.bytes, -1);
  FJORD_RETURN_IF_ERROR(ctx.store->DeleteFile(tenant, f.id));
  LogInfo("file deleted", {{"file", f.id}, {"tenant", tenant}, {"key", rq.principal.key_name}});
  return Reply::Body(protocol::FileInfoToJson(f));
}

}  // namespace fjord::daemon
