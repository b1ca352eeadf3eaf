#include "daemon/storage/tenant_areas.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/util/log.h"
#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

TenantAreas::TenantAreas(Storage* storage, Clock* clock, Options options, InFlight in_flight)
    : storage_(storage),
      clock_(clock),
      options_(std::move(options)),
      in_flight_(std::move(in_flight)) {}

// ---- ownership --------------------------------------------------------------

absl::StatusOr<WorkerIds> TenantAreas::IdsFor(const std::string& tenant) {
  if (!options_.tenant_ids) return WorkerIds{options_.worker_uid, options_.worker_gid};
  FJORD_ASSIGN_OR_RETURN(uint32_t id, options_.tenant_ids->Resolve(tenant));
  return WorkerIds{static_cast<uid_t>(id), static_cast<gid_t>(id)};
}

absl::Status TenantAreas::OwnArea(const std::string& tenant, const WorkerIds& ids) {
  if (!ids.gid) return absl::OkStatus();
  const std::string area = storage_->TenantDir(tenant);
  struct stat st {};
  if (::lstat(area.c_str(), &st) != 0) return absl::OkStatus();
  bool owned = st.st_gid == *ids.gid;
  for (const std::string& d : {storage_->FilesDir(tenant), area + "/jobs"}) {
    struct stat sub {};
    if (::lstat(d.c_str(), &sub) == 0 && sub.st_gid != *ids.gid) owned = false;
  }
  if (owned) return absl::OkStatus();
  LogInfo("giving a tenant's storage area to its workers' ids",
          {{"tenant", tenant},
           {"uid", static_cast<int64_t>(*ids.uid)},
           {"gid", static_cast<int64_t>(*ids.gid)},
           {"was_gid", static_cast<int64_t>(st.st_gid)}});
  return storage_->ReownTenantArea(tenant, *ids.uid, *ids.gid);
}

absl::Status TenantAreas::EnsureTenant(const std::string& tenant) {
  FJORD_RETURN_IF_ERROR(storage_->EnsureTenant(tenant));
  FJORD_ASSIGN_OR_RETURN(WorkerIds ids, IdsFor(tenant));
  return OwnArea(tenant, ids);
}

absl::Status TenantAreas::HandJobDirToWorker(const SafeDir& dir, const std::string& tenant) {
  FJORD_ASSIGN_OR_RETURN(WorkerIds ids, IdsFor(tenant));
  if (!ids.uid) return absl::OkStatus();
  FJORD_RETURN_IF_ERROR(dir.ChownEntry("checkpoints", ids.uid, ids.gid));
  return dir.Chown(ids.uid, ids.gid);
}

absl::Status TenantAreas::GiveWorkerItsLogs(const std::string& tenant, const std::string& job_id,
                                            const WorkerIds& ids) {
  if (!ids.uid) return absl::OkStatus();
  FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage_->OpenJobDir(tenant, job_id));
  for (const char* name : {"worker.log", "validation.json"}) {
    struct stat st {};
    if (::fstatat(dir.fd(), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
        st.st_uid != *ids.uid) {
      FJORD_RETURN_IF_ERROR(dir.ChownEntry(name, ids.uid, ids.gid));
    }
  }
  return absl::OkStatus();
}

// ---- a job's directory --------------------------------------------------------

absl::Status TenantAreas::RemoveJobDir(const std::string& tenant, const std::string& job_id) {
  absl::StatusOr<SafeDir> area = storage_->OpenTenantDir(tenant);
  if (!area.ok()) return absl::IsNotFound(area.status()) ? absl::OkStatus() : area.status();
  absl::StatusOr<SafeDir> jobs = area->OpenDir("jobs");
  if (!jobs.ok()) return absl::IsNotFound(jobs.status()) ? absl::OkStatus() : jobs.status();
  FJORD_RETURN_IF_ERROR(jobs->RemoveTree(job_id));
  (void)jobs->Sync();
  events_file_refused_.erase(job_id);
  return absl::OkStatus();
}

void TenantAreas::AppendJobEvents(const protocol::Job& job,
                                  const std::vector<protocol::JobEvent>& events) {
  if (events.empty()) return;
  std::string text;
  for (const protocol::JobEvent& e : events) {
    absl::StrAppend(&text, protocol::DumpJson(protocol::JobEventToJson(e)), "\n");
  }
  absl::Status s = [&]() -> absl::Status {
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage_->OpenJobDir(job.tenant, job.id));
    FJORD_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenAppend("events.jsonl", 0640));
    for (size_t done = 0; done < text.size();) {
      const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return absl::UnavailableError(absl::StrCat("write events.jsonl: ", std::strerror(errno)));
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }();
  if (!s.ok() && events_file_refused_.insert(job.id).second) {
    LogWarning("events.jsonl not written (the job's events stay in the store)",
               {{"job", job.id}, {"error", std::string(s.message())}});
  }
}

absl::StatusOr<std::string> TenantAreas::ReadJobFile(const std::string& tenant,
                                                     const std::string& job_id, const char* name,
                                                     size_t max_bytes, bool tail) {
  FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage_->OpenJobDir(tenant, job_id));
  if (tail) return dir.ReadTail(name, max_bytes);
  uint64_t size = 0;
  FJORD_ASSIGN_OR_RETURN(std::string head, dir.ReadHead(name, max_bytes, &size));
  if (size > head.size()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(name, " is ", size, " bytes; at most ", max_bytes, " are read"));
  }
  return head;
}

absl::StatusOr<SafeDir> TenantAreas::OpenAdapterDir(const std::string& tenant,
                                                    const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage_->OpenJobDir(tenant, job_id));
  return dir.OpenDir("adapter");
}

absl::StatusOr<SafeDir> TenantAreas::OpenReportDir(const std::string& tenant,
                                                   const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage_->OpenJobDir(tenant, job_id));
  return dir.OpenDir("report");
}

// ---- usage and quotas -----------------------------------------------------------

uint64_t TenantAreas::WalkBound() const {
  return options_.quota_files > 0 ? options_.quota_files + 1 : uint64_t{10'000'000};
}

Usage TenantAreas::WalkJobDir(const std::string& tenant, const std::string& job_id,
                              const Usage& before) {
  absl::StatusOr<SafeDir> dir = storage_->OpenJobDir(tenant, job_id);
  if (!dir.ok()) return Usage{};
  absl::StatusOr<SafeDir::Usage> u = dir->TreeUsage(WalkBound());
  if (absl::IsResourceExhausted(u.status())) return Usage{before.bytes, WalkBound()};
  if (!u.ok()) return before;
  return Usage{u->bytes, u->entries + 1};
}

void TenantAreas::Walk(const std::string& tenant, Area& area) {
  Area fresh;
  fresh.walked_ms = clock_->NowMs();
  absl::StatusOr<SafeDir> dir = storage_->OpenTenantDir(tenant);
  absl::StatusOr<std::vector<SafeDir::Entry>> entries = dir.ok() ? dir->List() : dir.status();
  if (entries.ok()) {
    for (const SafeDir::Entry& e : *entries) {
      const bool is_dir = e.type == SafeDir::Entry::Type::kDir;
      absl::StatusOr<SafeDir> sub = is_dir ? dir->OpenDir(e.name) : absl::NotFoundError("");
      if (e.name == "jobs" && sub.ok()) {
        absl::StatusOr<std::vector<SafeDir::Entry>> jobs = sub->List();
        if (!jobs.ok()) continue;
        for (const SafeDir::Entry& j : *jobs) {
          if (j.type != SafeDir::Entry::Type::kDir) {
            fresh.outside_jobs.bytes += j.bytes;
            ++fresh.outside_jobs.entries;
            continue;
          }
          auto old = area.jobs.find(j.name);
          fresh.jobs[j.name] =
              WalkJobDir(tenant, j.name, old != area.jobs.end() ? old->second : Usage{});
        }
      } else if (e.name == "files" && sub.ok()) {
        // Uploads in progress (.upload-*) count at their announced size.
        absl::StatusOr<std::vector<SafeDir::Entry>> files = sub->List();
        if (!files.ok()) continue;
        for (const SafeDir::Entry& f : *files) {
          if (absl::StartsWith(f.name, ".upload-")) continue;
          fresh.outside_jobs.bytes += f.bytes;
          ++fresh.outside_jobs.entries;
        }
      } else if (sub.ok()) {
        absl::StatusOr<SafeDir::Usage> u = sub->TreeUsage(WalkBound());
        fresh.outside_jobs.bytes += u.ok() ? u->bytes : 0;
        fresh.outside_jobs.entries += 1 + (u.ok() ? u->entries : WalkBound());
      } else {
        fresh.outside_jobs.bytes += e.bytes;
        ++fresh.outside_jobs.entries;
      }
    }
  }
  area = std::move(fresh);
}

TenantAreas::Area& TenantAreas::AreaOf(const std::string& tenant) {
  auto [it, inserted] = areas_.try_emplace(tenant);
  if (inserted) Walk(tenant, it->second);
  return it->second;
}

void TenantAreas::RefreshJob(const std::string& tenant, const std::string& job_id) {
  Area& area = AreaOf(tenant);
  area.jobs[job_id] = WalkJobDir(tenant, job_id, area.jobs[job_id]);
}

void TenantAreas::ForgetJob(const std::string& tenant, const std::string& job_id) {
  AreaOf(tenant).jobs.erase(job_id);
}

void TenantAreas::AddFile(const std::string& tenant, uint64_t bytes, int sign) {
  Usage& u = AreaOf(tenant).outside_jobs;
  if (sign > 0) {
    u.bytes += bytes;
    ++u.entries;
  } else {
    u.bytes -= std::min(u.bytes, bytes);
    u.entries -= std::min<uint64_t>(u.entries, 1);
  }
}

Usage TenantAreas::TenantUsage(const std::string& tenant) {
  const Area& area = AreaOf(tenant);
  Usage used = area.outside_jobs;
  for (const auto& [id, u] : area.jobs) {
    used.bytes += u.bytes;
    used.entries += u.entries;
  }
  const Uploading uploading = in_flight_(tenant);
  used.bytes += uploading.usage.bytes;
  used.entries += uploading.usage.entries;
  return used;
}

absl::Status TenantAreas::CheckQuota(const std::string& tenant, uint64_t bytes, uint64_t files,
                                     const char* param, const std::string& why) {
  const uint64_t quota = options_.quota_bytes, file_quota = options_.quota_files;
  if (quota == 0 && file_quota == 0) return absl::OkStatus();
  const Usage used = TenantUsage(tenant);
  if (quota > 0 && (used.bytes > quota || bytes > quota - used.bytes)) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("tenant '", tenant, "' uses ", used.bytes, " of its ", quota,
                     " bytes of storage", why,
                     ": delete files or ended jobs (file.delete, job.delete) first"),
        param);
  }
  if (file_quota > 0 && (used.entries > file_quota || files > file_quota - used.entries)) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("tenant '", tenant, "' has ", used.entries, " of its ", file_quota,
                     " files and directories in storage: delete files or ended jobs "
                     "(file.delete, job.delete) first"),
        "tenant");
  }
  return absl::OkStatus();
}

void TenantAreas::RescanOldest(int64_t older_than_ms) {
  auto oldest = std::min_element(areas_.begin(), areas_.end(), [](const auto& a, const auto& b) {
    return a.second.walked_ms < b.second.walked_ms;
  });
  if (oldest == areas_.end() || clock_->NowMs() - oldest->second.walked_ms < older_than_ms) return;
  DropUnfinishedUploads(oldest->first, /*at_start=*/false);
  Walk(oldest->first, oldest->second);
}

// ---- uploads on disk ---------------------------------------------------------------

std::string TenantAreas::UploadFileName(const std::string& upload_id) const {
  return absl::StrCat(".upload-", Sha256Hex(options_.node_name).substr(0, 12), "-", upload_id);
}

int TenantAreas::DropUnfinishedUploads(const std::string& tenant, bool at_start) {
  absl::StatusOr<SafeDir> area = storage_->OpenTenantDir(tenant);
  absl::StatusOr<SafeDir> files = area.ok() ? area->OpenDir("files") : area.status();
  absl::StatusOr<std::vector<SafeDir::Entry>> entries = files.ok() ? files->List() : files.status();
  if (!entries.ok()) return 0;
  const std::string mine = UploadFileName("");
  const std::set<std::string> in_progress = in_flight_(tenant).file_names;
  const int64_t now_s = clock_->WallMs() / 1000;
  int dropped = 0;
  for (const SafeDir::Entry& e : *entries) {
    if (!absl::StartsWith(e.name, ".upload-") || in_progress.count(e.name)) continue;
    struct stat st {};
    if (::fstatat(files->fd(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    const bool idle =
        now_s - static_cast<int64_t>(st.st_mtime) > 2 * options_.upload_idle_ms / 1000;
    if (!(at_start && absl::StartsWith(e.name, mine)) && !idle) continue;
    if (::unlinkat(files->fd(), e.name.c_str(), 0) != 0) continue;
    ++dropped;
    LogInfo("removed an unfinished upload",
            {{"tenant", tenant},
             {"file", e.name},
             {"bytes", static_cast<int64_t>(st.st_size)},
             {"why", idle ? "idle" : "left by this node before its restart"}});
  }
  if (dropped > 0) (void)files->Sync();
  return dropped;
}

void TenantAreas::DropUnfinishedUploadsAtStart() {
  absl::StatusOr<SafeDir> root = storage_->OpenRoot();
  absl::StatusOr<std::vector<SafeDir::Entry>> tenants = root.ok() ? root->List() : root.status();
  if (!tenants.ok()) return;
  for (const SafeDir::Entry& t : *tenants) {
    if (t.type == SafeDir::Entry::Type::kDir && protocol::ValidTenantName(t.name)) {
      DropUnfinishedUploads(t.name, /*at_start=*/true);
    }
  }
}

}  // namespace fjord::daemon
