#include "daemon/jobs/store.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::Job;
using protocol::JobEvent;

namespace {

// RAII prepared statement with bind helpers (1-based).
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_)));
  }
  Stmt& Bind(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // SQLITE_ROW -> true, SQLITE_DONE -> false, else an error.
  absl::StatusOr<bool> Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    if (rc == SQLITE_CONSTRAINT) {
      return absl::AlreadyExistsError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
    }
    return absl::InternalError(absl::StrCat("sqlite step: ", sqlite3_errmsg(db_)));
  }
  std::string Text(int col) {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back unless Commit() succeeded.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    char* err = nullptr;
    rc_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, &err);
    if (err) error_ = err, sqlite3_free(err);
  }
  ~Transaction() {
    if (rc_ == SQLITE_OK && !done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status status() const {
    return rc_ == SQLITE_OK ? absl::OkStatus()
                            : absl::InternalError(absl::StrCat("sqlite begin: ", error_));
  }
  absl::Status Commit() {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, &err);
    std::string e = err ? err : "";
    sqlite3_free(err);
    if (rc != SQLITE_OK) return absl::InternalError(absl::StrCat("sqlite commit: ", e));
    done_ = true;
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  int rc_;
  bool done_ = false;
  std::string error_;
};

absl::StatusOr<Job> ParseJobRow(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError("job store: a job row is not valid JSON");
  absl::StatusOr<Job> job = protocol::JobFromJson(j);
  if (!job.ok()) return absl::DataLossError(absl::StrCat("job store: ", job.status().message()));
  return job;
}

absl::StatusOr<protocol::FileInfo> FileRow(Stmt& s) {
  protocol::FileInfo f;
  f.id = s.Text(0);
  f.filename = s.Text(1);
  f.bytes = static_cast<uint64_t>(s.Int(2));
  f.sha256 = s.Text(3);
  f.created_at_ms = s.Int(4);
  f.path = s.Text(5);
  return f;
}

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  n INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  idempotency_key TEXT,
  fingerprint TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(tenant, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, n);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  type TEXT NOT NULL,
  message TEXT NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
  n INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  filename TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  path TEXT NOT NULL,
  upload_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_tenant ON files(tenant, n);
CREATE INDEX IF NOT EXISTS files_upload ON files(tenant, upload_id);
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("cannot open job store ", path, ": ", msg));
  }
  std::unique_ptr<JobStore> store(new JobStore(db));
  // WAL: readers never block the writer; synchronous=FULL: each commit is
  // fsynced before it returns (durable acceptance).
  FJORD_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  FJORD_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  FJORD_RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
  sqlite3_busy_timeout(db, 5000);
  {
    Stmt mode(db, "PRAGMA journal_mode");
    FJORD_RETURN_IF_ERROR(mode.status());
    FJORD_ASSIGN_OR_RETURN(bool row, mode.Step());
    if (!row || mode.Text(0) != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("job store ", path, ": the filesystem does not support SQLite's WAL mode"));
    }
  }
  FJORD_RETURN_IF_ERROR(store->Exec(kSchema));
  Stmt v(db, "SELECT value FROM meta WHERE key = 'schema_version'");
  FJORD_RETURN_IF_ERROR(v.status());
  FJORD_ASSIGN_OR_RETURN(bool has, v.Step());
  if (!has) {
    FJORD_RETURN_IF_ERROR(
        store->Exec(absl::StrCat("INSERT INTO meta(key, value) VALUES ('schema_version', '",
                                 kStoreSchemaVersion, "')")
                        .c_str()));
  } else {
    const int version = std::atoi(v.Text(0).c_str());
    if (version > kStoreSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job store ", path, " has schema version ", version, "; this fjordd knows up to ",
          kStoreSchemaVersion, " (a newer fjordd wrote it)"));
    }
  }
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::Exec(const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return absl::OkStatus();
  std::string e = err ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return absl::InternalError(absl::StrCat("sqlite: ", e));
}

absl::Status JobStore::WriteJob(const Job& job, bool insert, const std::string& fingerprint) {
  const std::string body = protocol::DumpJson(protocol::JobToJson(job));
  if (insert) {
    Stmt s(
        db_,
        "INSERT INTO jobs(id, tenant, status, created_at_ms, idempotency_key, fingerprint, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)");
    FJORD_RETURN_IF_ERROR(s.status());
    s.Bind(1, job.id).Bind(2, job.tenant).Bind(3, std::string(protocol::JobStatusName(job.status)));
    s.Bind(4, job.created_at_ms);
    if (job.spec.idempotency_key.empty())
      s.BindNull(5);
    else
      s.Bind(5, job.spec.idempotency_key);
    s.Bind(6, fingerprint).Bind(7, body);
    return s.Step().status();
  }
  Stmt s(db_, "UPDATE jobs SET status = ?, body = ? WHERE id = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, std::string(protocol::JobStatusName(job.status))).Bind(2, body).Bind(3, job.id);
  FJORD_RETURN_IF_ERROR(s.Step().status());
  if (sqlite3_changes(db_) != 1) return absl::NotFoundError(absl::StrCat("no job '", job.id, "'"));
  return absl::OkStatus();
}

absl::Status JobStore::AppendEvents(const std::string& job_id, std::vector<JobEvent>* events) {
  if (events == nullptr || events->empty()) return absl::OkStatus();
  FJORD_ASSIGN_OR_RETURN(int64_t seq, LastEventSeq(job_id));
  Stmt s(db_,
         "INSERT INTO events(job_id, seq, time_ms, type, message, data) VALUES (?, ?, ?, ?, ?, ?)");
  FJORD_RETURN_IF_ERROR(s.status());
  for (JobEvent& e : *events) {
    e.seq = ++seq;
    s.Reset();
    s.Bind(1, job_id).Bind(2, e.seq).Bind(3, e.time_ms).Bind(4, e.type).Bind(5, e.message);
    s.Bind(6, protocol::DumpJson(e.data));
    FJORD_RETURN_IF_ERROR(s.Step().status());
  }
  return absl::OkStatus();
}

absl::StatusOr<CreateResult> JobStore::CreateJob(const Job& job, const std::string& fingerprint,
                                                 std::vector<JobEvent>* events) {
  Transaction tx(db_);
  FJORD_RETURN_IF_ERROR(tx.status());
  if (!job.spec.idempotency_key.empty()) {
    Stmt s(db_, "SELECT fingerprint, body FROM jobs WHERE tenant = ? AND idempotency_key = ?");
    FJORD_RETURN_IF_ERROR(s.status());
    s.Bind(1, job.tenant).Bind(2, job.spec.idempotency_key);
    FJORD_ASSIGN_OR_RETURN(bool found, s.Step());
    if (found) {
      if (s.Text(0) != fingerprint) {
        return protocol::Error(absl::StatusCode::kAlreadyExists,
                               absl::StrCat("idempotency_key '", job.spec.idempotency_key,
                                            "' was used for a different job.create request"),
                               "idempotency_key");
      }
      FJORD_ASSIGN_OR_RETURN(Job existing, ParseJobRow(s.Text(1)));
      return CreateResult{std::move(existing), false};
    }
  }
  FJORD_RETURN_IF_ERROR(WriteJob(job, /*insert=*/true, fingerprint));
  FJORD_RETURN_IF_ERROR(AppendEvents(job.id, events));
  FJORD_RETURN_IF_ERROR(tx.Commit());
  return CreateResult{job, true};
}

absl::StatusOr<std::optional<Job>> JobStore::FindIdempotent(const std::string& tenant,
                                                            const std::string& key,
                                                            const std::string& fingerprint) {
  Stmt s(db_, "SELECT fingerprint, body FROM jobs WHERE tenant = ? AND idempotency_key = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, tenant).Bind(2, key);
  FJORD_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found) return std::optional<Job>();
  if (s.Text(0) != fingerprint) {
    return protocol::Error(
        absl::StatusCode::kAlreadyExists,
        absl::StrCat("idempotency_key '", key, "' was used for a different job.create request"),
        "idempotency_key");
  }
  FJORD_ASSIGN_OR_RETURN(Job job, ParseJobRow(s.Text(1)));
  return std::optional<Job>(std::move(job));
}

absl::Status JobStore::UpdateJob(const Job& job, std::vector<JobEvent>* events) {
  Transaction tx(db_);
  FJORD_RETURN_IF_ERROR(tx.status());
  FJORD_RETURN_IF_ERROR(WriteJob(job, /*insert=*/false, ""));
  FJORD_RETURN_IF_ERROR(AppendEvents(job.id, events));
  return tx.Commit();
}

absl::Status JobStore::DeleteJob(const std::string& id) {
  Transaction tx(db_);
  FJORD_RETURN_IF_ERROR(tx.status());
  {
    Stmt s(db_, "DELETE FROM jobs WHERE id = ?");
    FJORD_RETURN_IF_ERROR(s.status());
    s.Bind(1, id);
    FJORD_RETURN_IF_ERROR(s.Step().status());
    if (sqlite3_changes(db_) == 0) {
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", id, "'"),
                             "job_id");
    }
  }
  {
    Stmt s(db_, "DELETE FROM events WHERE job_id = ?");
    FJORD_RETURN_IF_ERROR(s.status());
    s.Bind(1, id);
    FJORD_RETURN_IF_ERROR(s.Step().status());
  }
  return tx.Commit();
}

absl::StatusOr<Job> JobStore::GetJob(const std::string& id) {
  Stmt s(db_, "SELECT body FROM jobs WHERE id = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  FJORD_ASSIGN_OR_RETURN(bool found, s.Step());
  if (!found)
    return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", id, "'"),
                           "job_id");
  return ParseJobRow(s.Text(0));
}

absl::StatusOr<std::vector<Job>> JobStore::ListJobs(const JobFilter& f) {
  std::string sql = "SELECT body FROM jobs WHERE 1=1";
  if (!f.tenant.empty()) sql += " AND tenant = ?1";
  if (!f.after.empty()) sql += " AND n < (SELECT n FROM jobs WHERE id = ?2)";
  if (!f.statuses.empty()) {
    sql += " AND status IN (";
    for (size_t i = 0; i < f.statuses.size(); ++i) {
      absl::StrAppend(&sql, i ? ", " : "", "'", protocol::JobStatusName(f.statuses[i]), "'");
    }
    sql += ")";
  }
  absl::StrAppend(&sql, " ORDER BY n DESC LIMIT ", f.limit + 1);
  Stmt s(db_, sql.c_str());
  FJORD_RETURN_IF_ERROR(s.status());
  if (!f.tenant.empty()) s.Bind(1, f.tenant);
  if (!f.after.empty()) s.Bind(2, f.after);
  std::vector<Job> out;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    FJORD_ASSIGN_OR_RETURN(Job j, ParseJobRow(s.Text(0)));
    out.push_back(std::move(j));
  }
  return out;
}

absl::StatusOr<std::vector<Job>> JobStore::LiveJobs() {
  Stmt s(
      db_,
      "SELECT body FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY n");
  FJORD_RETURN_IF_ERROR(s.status());
  std::vector<Job> out;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    FJORD_ASSIGN_OR_RETURN(Job j, ParseJobRow(s.Text(0)));
    out.push_back(std::move(j));
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> JobStore::CountByStatus() {
  Stmt s(db_, "SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status");
  FJORD_RETURN_IF_ERROR(s.status());
  std::vector<std::pair<std::string, int64_t>> out;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.emplace_back(s.Text(0), s.Int(1));
  }
  return out;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::ListEvents(const std::string& job_id,
                                                           int64_t after_seq, int limit) {
  Stmt s(db_,
         "SELECT seq, time_ms, type, message, data FROM events WHERE job_id = ? AND seq > ? "
         "ORDER BY seq LIMIT ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id).Bind(2, after_seq).Bind(3, static_cast<int64_t>(limit));
  std::vector<JobEvent> out;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    JobEvent e;
    e.seq = s.Int(0);
    e.time_ms = s.Int(1);
    e.type = s.Text(2);
    e.message = s.Text(3);
    e.data = json::parse(s.Text(4), nullptr, false);
    if (!e.data.is_object()) e.data = json::object();
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<int64_t> JobStore::LastEventSeq(const std::string& job_id) {
  Stmt s(db_, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.Int(0) : 0;
}

absl::Status JobStore::AddFile(const std::string& tenant, const protocol::FileInfo& f,
                               const std::string& upload_id) {
  Stmt s(db_,
         "INSERT INTO files(id, tenant, filename, bytes, sha256, created_at_ms, path, upload_id) "
         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, f.id).Bind(2, tenant).Bind(3, f.filename).Bind(4, static_cast<int64_t>(f.bytes));
  s.Bind(5, f.sha256).Bind(6, f.created_at_ms).Bind(7, f.path).Bind(8, upload_id);
  return s.Step().status();
}

absl::StatusOr<protocol::FileInfo> JobStore::GetFile(const std::string& tenant,
                                                     const std::string& id) {
  Stmt s(db_,
         "SELECT id, filename, bytes, sha256, created_at_ms, path FROM files WHERE tenant = ? AND "
         "id = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, tenant).Bind(2, id);
  FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row)
    return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no file '", id, "'"),
                           "file_id");
  return FileRow(s);
}

absl::StatusOr<protocol::FileInfo> JobStore::GetFileByUpload(const std::string& tenant,
                                                             const std::string& upload_id) {
  Stmt s(db_,
         "SELECT id, filename, bytes, sha256, created_at_ms, path FROM files "
         "WHERE tenant = ? AND upload_id = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, tenant).Bind(2, upload_id);
  FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no upload '", upload_id, "'"),
                           "upload_id");
  }
  return FileRow(s);
}

absl::Status JobStore::DeleteFile(const std::string& tenant, const std::string& id) {
  Stmt s(db_, "DELETE FROM files WHERE tenant = ? AND id = ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, tenant).Bind(2, id);
  FJORD_RETURN_IF_ERROR(s.Step().status());
  if (::sqlite3_changes(db_) == 0) {
    return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no file '", id, "'"),
                           "file_id");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<protocol::FileInfo>> JobStore::ListFiles(const std::string& tenant,
                                                                    int limit,
                                                                    const std::string& after) {
  int64_t before_n = INT64_MAX;
  if (!after.empty()) {
    Stmt n(db_, "SELECT n FROM files WHERE tenant = ? AND id = ?");
    FJORD_RETURN_IF_ERROR(n.status());
    n.Bind(1, tenant).Bind(2, after);
    FJORD_ASSIGN_OR_RETURN(bool row, n.Step());
    if (!row)
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no file '", after, "'"),
                             "after");
    before_n = n.Int(0);
  }
  Stmt s(db_,
         "SELECT id, filename, bytes, sha256, created_at_ms, path FROM files WHERE tenant = ? AND "
         "n < ? "
         "ORDER BY n DESC LIMIT ?");
  FJORD_RETURN_IF_ERROR(s.status());
  s.Bind(1, tenant).Bind(2, before_n).Bind(3, static_cast<int64_t>(limit));
  std::vector<protocol::FileInfo> out;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    FJORD_ASSIGN_OR_RETURN(protocol::FileInfo f, FileRow(s));
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace fjord::daemon
