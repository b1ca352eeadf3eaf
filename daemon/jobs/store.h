// JobStore: the daemon's durable state in SQLite (one file under the state
// directory): jobs, their events, uploaded files. WAL journal, and
// synchronous=FULL so every commit is fsynced: a job whose create returned
// OK survives kill -9 of the daemon and a power loss. The schema is
// versioned (meta.schema_version); a database newer than this code is
// refused.
//
// Jobs are stored as their protocol JSON (protocol::JobToJson) plus indexed
// columns (tenant, status, creation order, idempotency key).
//
// Not thread-safe: the server loop owns the store.
#ifndef FJORD_DAEMON_JOBS_STORE_H_
#define FJORD_DAEMON_JOBS_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"

struct sqlite3;

namespace fjord::daemon {

inline constexpr int kStoreSchemaVersion = 1;

struct JobFilter {
  std::string tenant;                         // "" = every tenant
  std::vector<protocol::JobStatus> statuses;  // empty = all
  std::string after;                          // job id: only jobs created before it
  int limit = 20;
};

struct CreateResult {
  protocol::Job job;
  bool created = false;  // false: the idempotency key's existing job
};

class JobStore {
 public:
  // Opens (creating if needed) the database at path. Internal on SQLite
  // errors (the message has SQLite's), FailedPrecondition for a newer schema.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Inserts job and its first events in one fsynced transaction. With an
  // idempotency key the tenant used before: returns that job (created=false)
  // when `fingerprint` matches, AlreadyExists (param idempotency_key) when not.
  // Events get their seq assigned (dense from 1).
  absl::StatusOr<CreateResult> CreateJob(const protocol::Job& job, const std::string& fingerprint,
                                         std::vector<protocol::JobEvent>* events);
  // The job a tenant created with this idempotency key: nullopt when the key
  // is new, AlreadyExists (param idempotency_key) when the key was used with
  // a different fingerprint.
  absl::StatusOr<std::optional<protocol::Job>> FindIdempotent(const std::string& tenant,
                                                              const std::string& key,
                                                              const std::string& fingerprint);
  // Replaces the job's row and appends events, atomically. NotFound if the
  // job does not exist.
  absl::Status UpdateJob(const protocol::Job& job,
                         std::vector<protocol::JobEvent>* events = nullptr);
  absl::StatusOr<protocol::Job> GetJob(const std::string& id);
  // Removes the job's record, its events and (with it) its idempotency key,
  // in one transaction. NotFound (param job_id) when there is no such job.
  absl::Status DeleteJob(const std::string& id);
  // Newest first. Returns up to limit + 1 jobs so the caller can tell has_more.
  absl::StatusOr<std::vector<protocol::Job>> ListJobs(const JobFilter& filter);
  // Every job not in a final status, oldest first.
  absl::StatusOr<std::vector<protocol::Job>> LiveJobs();
  // Jobs per final status (for metrics).
  absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> CountByStatus();

  absl::StatusOr<std::vector<protocol::JobEvent>> ListEvents(const std::string& job_id,
                                                             int64_t after_seq, int limit);
  // The highest seq of a job's events (0 when none).
  absl::StatusOr<int64_t> LastEventSeq(const std::string& job_id);

  absl::Status AddFile(const std::string& tenant, const protocol::FileInfo& file,
                       const std::string& upload_id);
  // NotFound (param "file_id") for a file of another tenant too.
  absl::StatusOr<protocol::FileInfo> GetFile(const std::string& tenant, const std::string& id);
  absl::StatusOr<protocol::FileInfo> GetFileByUpload(const std::string& tenant,
                                                     const std::string& upload_id);
  // The tenant's files, newest first, at most `limit`; with `after` (a file
  // id of the tenant's), those older than it. NotFound when `after` is not
  // one of the tenant's files.
  absl::StatusOr<std::vector<protocol::FileInfo>> ListFiles(const std::string& tenant, int limit,
                                                            const std::string& after = "");
  // Removes the file's record. NotFound (param file_id) when the tenant has none.
  absl::Status DeleteFile(const std::string& tenant, const std::string& id);

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  absl::Status AppendEvents(const std::string& job_id, std::vector<protocol::JobEvent>* events);
  absl::Status WriteJob(const protocol::Job& job, bool insert, const std::string& fingerprint);

  sqlite3* db_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_JOBS_STORE_H_
