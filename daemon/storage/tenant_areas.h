// TenantAreas: each tenant's area on the storage root as fjordd (root)
// manages it: who owns it, what fjordd writes and reads in its job
// directories (always through SafeDir: a worker's directory is never
// resolved by path), how much it holds against the quotas, and the uploads a
// dead daemon left behind.
//
//   <root>/<tenant>/           root's, the tenant's workers' group, 0750
//   <root>/<tenant>/files/     uploads (root's; .upload-<node>-<id> in progress)
//   <root>/<tenant>/jobs/<id>/ the job's directory: the worker's uid
//
// Usage is kept, not walked per request: the part outside jobs/ is walked
// when the tenant is first seen and again by RescanOldest (other nodes on the
// same storage root upload there too) and changed by AddFile in between;
// each job directory is walked on its own (RefreshJob, bounded) and
// forgotten by ForgetJob. Uploads in progress come from the caller.
//
// Not thread-safe: the server loop owns it.
#ifndef FJORD_DAEMON_STORAGE_TENANT_AREAS_H_
#define FJORD_DAEMON_STORAGE_TENANT_AREAS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"
#include "daemon/storage/safe_dir.h"
#include "daemon/storage/storage.h"
#include "daemon/storage/tenant_ids.h"
#include "daemon/util/clock.h"

namespace fjord::daemon {

// The ids a tenant's workers run as: worker.tenant_uid_range's per-tenant
// uid, worker.user's, or none (the daemon's own).
struct WorkerIds {
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
};

// Bytes, and files and directories.
struct Usage {
  uint64_t bytes = 0;
  uint64_t entries = 0;
};

class TenantAreas {
 public:
  struct Options {
    std::optional<uid_t> worker_uid;  // worker.user: one user for every tenant
    std::optional<gid_t> worker_gid;
    TenantIds* tenant_ids = nullptr;  // worker.tenant_uid_range: a uid per tenant (not owned)
    uint64_t quota_bytes = 0;         // limits.max_tenant_storage_bytes; 0: none
    uint64_t quota_files = 0;         // limits.max_tenant_files; 0: none
    int64_t upload_idle_ms = 600000;  // limits.upload_idle_s
    std::string node_name;            // tags this node's uploads
  };
  // A tenant's uploads in progress: their announced bytes (one entry each)
  // and their file names in files/.
  struct Uploading {
    Usage usage;
    std::set<std::string> file_names;
  };
  using InFlight = std::function<Uploading(const std::string& tenant)>;

  // `storage` and `clock` are not owned and must outlive this.
  TenantAreas(Storage* storage, Clock* clock, Options options, InFlight in_flight);

  // ---- ownership ---------------------------------------------------------
  absl::StatusOr<WorkerIds> IdsFor(const std::string& tenant);
  // Creates the area (files/, jobs/) and gives it to the tenant's workers'
  // ids when they changed (OwnArea).
  absl::Status EnsureTenant(const std::string& tenant);
  // An area made for other ids (before worker.user changed, or before
  // worker.tenant_uid_range was set) is given to `ids`, job directories
  // included, so a requeued job can read and rotate its checkpoints; so is
  // one whose files/ or jobs/ was made again. A missing area stays missing.
  absl::Status OwnArea(const std::string& tenant, const WorkerIds& ids);
  // A new job's directory, made by root and filled (job.yaml, events.jsonl),
  // goes to the worker's uid: what fjordd creates there exists before a
  // worker could plant anything in its place.
  absl::Status HandJobDirToWorker(const SafeDir& dir, const std::string& tenant);
  // The worker opens worker.log and validation.json itself, as its uid
  // (daemon/worker/worker_process.h); earlier fjordd versions created them as
  // root. Such a file (a regular file with one link, another owner) is given
  // to the worker's ids through SafeDir::ChownEntry before a launch.
  absl::Status GiveWorkerItsLogs(const std::string& tenant, const std::string& job_id,
                                 const WorkerIds& ids);

  // ---- a job's directory (the worker's: through SafeDir only) -------------
  // Removes it (SafeDir::RemoveTree relative to the tenant's jobs/, which is
  // root's). OK when it is gone already.
  absl::Status RemoveJobDir(const std::string& tenant, const std::string& job_id);
  // events.jsonl, a copy of the job's events for people reading the storage
  // root (the store is the record), appended through SafeDir::OpenAppend: a
  // link in its place is refused (logged once per job).
  void AppendJobEvents(const protocol::Job& job, const std::vector<protocol::JobEvent>& events);
  // A file the worker left: the first max_bytes (ResourceExhausted when it
  // is longer), or with `tail` the last max_bytes.
  absl::StatusOr<std::string> ReadJobFile(const std::string& tenant, const std::string& job_id,
                                          const char* name, size_t max_bytes, bool tail);
  // The job's adapter/, opened from the storage root down.
  absl::StatusOr<SafeDir> OpenAdapterDir(const std::string& tenant, const std::string& job_id);
  // An evaluation job's report/ (the same way).
  absl::StatusOr<SafeDir> OpenReportDir(const std::string& tenant, const std::string& job_id);

  // ---- usage and quotas --------------------------------------------------
  Usage TenantUsage(const std::string& tenant);
  void RefreshJob(const std::string& tenant, const std::string& job_id);
  void ForgetJob(const std::string& tenant, const std::string& job_id);
  // An uploaded file added (sign > 0) or deleted (< 0).
  void AddFile(const std::string& tenant, uint64_t bytes, int sign);
  // RESOURCE_EXHAUSTED when `bytes` and `files` more would take the tenant
  // past the byte quota (refused with `param`; `why` ends the usage part of
  // the message) or the file quota (param "tenant").
  absl::Status CheckQuota(const std::string& tenant, uint64_t bytes, uint64_t files,
                          const char* param, const std::string& why);
  // The tenant walked longest ago, when that was over `older_than_ms` ago,
  // is walked again (its idle uploads removed first).
  void RescanOldest(int64_t older_than_ms);
  // The most entries one directory listing or walk of a worker's tree reads.
  uint64_t WalkBound() const;

  // ---- uploads on disk ----------------------------------------------------
  // files/.upload-<node tag>-<upload id>: the tag (the first 12 hex digits of
  // SHA-256(node_name)) tells this node's uploads from other nodes'.
  std::string UploadFileName(const std::string& upload_id) const;
  // Uploads nobody can finish any more are removed from each tenant's
  // files/: at start, every one this node made (it was killed mid-upload)
  // and, at start and with each rescan, any node's that has not been written
  // to for twice upload_idle_ms. This daemon's uploads in progress are never
  // removed. Returns how many were; each is logged.
  int DropUnfinishedUploads(const std::string& tenant, bool at_start);
  void DropUnfinishedUploadsAtStart();

 private:
  struct Area {
    int64_t walked_ms = 0;
    Usage outside_jobs;
    std::map<std::string, Usage> jobs;
  };
  Usage WalkJobDir(const std::string& tenant, const std::string& job_id, const Usage& before);
  void Walk(const std::string& tenant, Area& area);
  Area& AreaOf(const std::string& tenant);

  Storage* storage_;
  Clock* clock_;
  Options options_;
  InFlight in_flight_;
  std::map<std::string, Area> areas_;
  std::set<std::string> events_file_refused_;  // jobs whose events.jsonl was refused (logged once)
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_STORAGE_TENANT_AREAS_H_
