// Adapters: adapter.files, adapter.download (docs/protocol.md §5). The
// adapter is the worker's (its job directory): it is listed, hashed and
// read through SafeDir, opened from the storage root down on every request,
// so a link put in place of adapter/ or of a file in it is an error, never a
// way to another tenant's adapter — a cached listing included.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/server/handlers.h"
#include "daemon/server/sessions.h"
#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::FieldReader;
using protocol::Job;
using protocol::JobStatus;

namespace {

// An adapter directory holding more entries than this is refused (a PEFT
// adapter has two or three files).
constexpr uint64_t kMaxAdapterFiles = 1000;

// Download chunks waiting in one connection's send queue: at most this many
// (a client that asks for chunks and never reads them is refused, not
// buffered without end). The SDKs ask for one at a time.
constexpr int64_t kMaxQueuedChunksPerPeer = 4;

// What a job leaves: a fine-tune job its PEFT adapter (adapter/), an
// evaluation job its report (report/).
enum class Result { kAdapter, kReport };

const char* ResultName(Result kind) { return kind == Result::kAdapter ? "adapter" : "report"; }

absl::StatusOr<SafeDir> OpenResultDir(DaemonContext& ctx, const Job& job, Result kind) {
  return kind == Result::kAdapter ? ctx.tenants->OpenAdapterDir(job.tenant, job.id)
                                  : ctx.tenants->OpenReportDir(job.tenant, job.id);
}

// The files of a succeeded job's adapter (or report) with their sizes and
// SHA-256, cached per job.
absl::StatusOr<std::vector<protocol::AdapterFile>> ResultFiles(DaemonContext& ctx, const Job& job,
                                                               Result kind) {
  if ((kind == Result::kReport) != job.spec.is_evaluation()) {
    return protocol::Error(
        absl::StatusCode::kFailedPrecondition,
        kind == Result::kReport
            ? absl::StrCat("job ", job.id,
                           " is a fine-tune; its result is an adapter (adapter.files)")
            : absl::StrCat("job ", job.id,
                           " is an evaluation; its result is a report (report.files)"),
        "job_id");
  }
  if (job.status != JobStatus::kSucceeded || job.result_adapter_path.empty()) {
    return protocol::Error(absl::StatusCode::kFailedPrecondition,
                           absl::StrCat("job ", job.id, " is ", protocol::JobStatusName(job.status),
                                        "; only a succeeded job has ",
                                        kind == Result::kAdapter ? "an adapter" : "a report"),
                           "job_id");
  }
  auto cached = ctx.adapter_cache->find(job.id);
  if (cached != ctx.adapter_cache->end()) return cached->second;
  FJORD_ASSIGN_OR_RETURN(SafeDir dir, OpenResultDir(ctx, job, kind));
  FJORD_ASSIGN_OR_RETURN(std::vector<SafeDir::Entry> entries, dir.List(kMaxAdapterFiles));
  std::vector<protocol::AdapterFile> files;
  for (const SafeDir::Entry& e : entries) {
    if (e.type != SafeDir::Entry::Type::kFile) continue;
    FJORD_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenRead(e.name));
    Sha256 h;
    uint64_t bytes = 0;
    std::string buf(1 << 16, '\0');
    while (true) {
      const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return absl::UnavailableError(
            absl::StrCat("read ", dir.path(), "/", e.name, ": ", std::strerror(errno)));
      if (n == 0) break;
      h.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
      bytes += static_cast<uint64_t>(n);
    }
    files.push_back({e.name, bytes, h.FinalHex()});
  }
  (*ctx.adapter_cache)[job.id] = files;
  return files;
}

absl::StatusOr<Reply> Files(DaemonContext& ctx, const Request& rq, Result kind) {
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq));
  FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files, ResultFiles(ctx, job, kind));
  json out = json::array();
  for (const auto& f : files)
    out.push_back({{"name", f.name}, {"bytes", f.bytes}, {"sha256", f.sha256}});
  return Reply::Body(json{{"files", out}, {"path", job.result_adapter_path}});
}

absl::StatusOr<Reply> Download(DaemonContext& ctx, const Request& rq, Result kind) {
  const int64_t chunk_bytes = static_cast<int64_t>(ctx.config->limits.upload_chunk_bytes);
  std::string name;
  int64_t offset = 0, length = chunk_bytes;
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq, [&](FieldReader& r) -> absl::Status {
                           FJORD_RETURN_IF_ERROR(r.String("name", &name, true, 255));
                           FJORD_RETURN_IF_ERROR(r.Int("offset", &offset, 0, INT64_MAX));
                           return r.Int("length", &length, 1, INT64_MAX);
                         }));
  length = std::min(length, chunk_bytes);
  FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files, ResultFiles(ctx, job, kind));
  auto f = std::find_if(files.begin(), files.end(), [&](const auto& x) { return x.name == name; });
  if (f == files.end()) {
    return protocol::Error(absl::StatusCode::kNotFound,
                           absl::StrCat("the ", ResultName(kind), " has no file '", name, "'"),
                           "name");
  }
  if (ctx.sessions->QueuedChunks(rq.identity) >= kMaxQueuedChunksPerPeer) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("this connection has ", kMaxQueuedChunksPerPeer,
                     " download chunks waiting to be sent; read them before asking for more"),
        "offset");
  }
  absl::StatusOr<SafeDir> dir = OpenResultDir(ctx, job, kind);
  absl::StatusOr<UniqueFd> opened = dir.ok() ? dir->OpenRead(name) : dir.status();
  if (!opened.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot open the ", ResultName(kind), " file: ", opened.status().message()));
  }
  const UniqueFd fd = std::move(*opened);
  const uint64_t off = std::min<uint64_t>(static_cast<uint64_t>(offset), f->bytes);
  std::string data(std::min<uint64_t>(static_cast<uint64_t>(length), f->bytes - off), '\0');
  for (size_t got = 0; got < data.size();) {
    const ssize_t n =
        ::pread(fd.get(), data.data() + got, data.size() - got, static_cast<off_t>(off + got));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return absl::UnavailableError(
          absl::StrCat("the ", ResultName(kind), " file changed while it was read"));
    }
    got += static_cast<size_t>(n);
  }
  protocol::ServerMessage m =
      protocol::OkReply(rq.request_id, json{{"name", name},
                                            {"offset", off},
                                            {"bytes", data.size()},
                                            {"total_bytes", f->bytes},
                                            {"eof", off + data.size() >= f->bytes}});
  m.data = std::move(data);
  return Reply::Chunk(std::move(m));
}

}  // namespace

absl::StatusOr<Reply> HandleAdapterFiles(DaemonContext& ctx, const Request& rq) {
  return Files(ctx, rq, Result::kAdapter);
}
absl::StatusOr<Reply> HandleAdapterDownload(DaemonContext& ctx, const Request& rq) {
  return Download(ctx, rq, Result::kAdapter);
}
absl::StatusOr<Reply> HandleReportFiles(DaemonContext& ctx, const Request& rq) {
  return Files(ctx, rq, Result::kReport);
}
absl::StatusOr<Reply> HandleReportDownload(DaemonContext& ctx, const Request& rq) {
  return Download(ctx, rq, Result::kReport);
}

}  // namespace fjord::daemon
