#include "daemon/jobs/store.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using protocol::Job;
using protocol::JobEvent;
using protocol::JobStatus;
using ::testing::HasSubstr;

std::string TempDb(const char* name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir ? dir : "/tmp") + "/" + name + ".db";
  ::unlink(path.c_str());
  ::unlink((path + "-wal").c_str());
  ::unlink((path + "-shm").c_str());
  return path;
}

Job MakeJob(const std::string& id, const std::string& tenant, int64_t t,
            const std::string& key = "") {
  Job j;
  j.id = id;
  j.tenant = tenant;
  j.spec.tenant = tenant;
  j.spec.model = "tiny";
  j.spec.training_file = "file-1";
  j.spec.idempotency_key = key;
  j.spec.max_restarts = 3;
  j.created_at_ms = t;
  return j;
}

JobEvent Ev(const std::string& type) {
  JobEvent e;
  e.type = type;
  e.time_ms = 1;
  e.data = {{"x", 1}};
  return e;
}

TEST(JobStoreTest, CreateGetUpdateList) {
  auto store = *JobStore::Open(TempDb("basic"));
  std::vector<JobEvent> ev = {Ev("status")};
  absl::StatusOr<CreateResult> r = store->CreateJob(MakeJob("job-a", "acme", 1), "fp", &ev);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->created);
  EXPECT_EQ(ev[0].seq, 1);
  ASSERT_TRUE(store->CreateJob(MakeJob("job-b", "acme", 2), "fp", nullptr).ok());
  ASSERT_TRUE(store->CreateJob(MakeJob("job-c", "other", 3), "fp", nullptr).ok());

  Job a = *store->GetJob("job-a");
  a.status = JobStatus::kRunning;
  a.step = 7;
  std::vector<JobEvent> more = {Ev("step"), Ev("step")};
  ASSERT_TRUE(store->UpdateJob(a, &more).ok());
  EXPECT_EQ(more[1].seq, 3);
  EXPECT_EQ(store->GetJob("job-a")->step, 7);
  EXPECT_EQ(*store->LastEventSeq("job-a"), 3);
  std::vector<JobEvent> events = *store->ListEvents("job-a", 1, 10);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].seq, 2);
  EXPECT_EQ(events[0].data["x"], 1);

  absl::StatusOr<Job> missing = store->GetJob("job-z");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(protocol::ParamOf(missing.status()), "job_id");
  EXPECT_EQ(store->UpdateJob(MakeJob("job-z", "acme", 1)).code(), absl::StatusCode::kNotFound);

  JobFilter f;
  f.tenant = "acme";
  std::vector<Job> jobs = *store->ListJobs(f);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].id, "job-b");  // newest first
  f.after = "job-b";
  jobs = *store->ListJobs(f);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id, "job-a");
  f = {};
  f.statuses = {JobStatus::kRunning};
  jobs = *store->ListJobs(f);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id, "job-a");
  f = {};
  f.limit = 1;
  EXPECT_EQ(store->ListJobs(f)->size(), 2u);  // limit + 1: has_more
  EXPECT_EQ(store->LiveJobs()->size(), 3u);
}

TEST(JobStoreTest, IdempotencyKeys) {
  auto store = *JobStore::Open(TempDb("idem"));
  ASSERT_TRUE(store->CreateJob(MakeJob("job-1", "acme", 1, "k"), "fp1", nullptr).ok());
  absl::StatusOr<CreateResult> again =
      store->CreateJob(MakeJob("job-2", "acme", 2, "k"), "fp1", nullptr);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->job.id, "job-1");
  absl::StatusOr<CreateResult> diff =
      store->CreateJob(MakeJob("job-3", "acme", 3, "k"), "fp2", nullptr);
  EXPECT_EQ(diff.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(protocol::ParamOf(diff.status()), "idempotency_key");
  // Keys are per tenant.
  absl::StatusOr<CreateResult> other =
      store->CreateJob(MakeJob("job-4", "zeta", 4, "k"), "fp2", nullptr);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->created);
  JobFilter f;
  EXPECT_EQ(store->ListJobs(f)->size(), 2u);
}

// A child process creates a job and dies without closing the database (as
// kill -9 would); the job is there when the database is opened again.
TEST(JobStoreTest, CommittedJobSurvivesAbruptExit) {
  const std::string path = TempDb("crash");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto store = JobStore::Open(path);
    if (!store.ok() ||
        !(*store)->CreateJob(MakeJob("job-k", "acme", 1, "key"), "fp", nullptr).ok()) {
      ::_exit(1);
    }
    ::_exit(0);  // no destructor, no sqlite3_close, no checkpoint
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto store = *JobStore::Open(path);
  absl::StatusOr<Job> j = store->GetJob("job-k");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->spec.idempotency_key, "key");
}

// The job's quantization is kept in its record: "nf4" reads back after the
// database is opened again; a job without it (as every job stored before the
// field existed) reads as "none".
TEST(JobStoreTest, QuantizationRoundTrips) {
  const std::string path = TempDb("quantization");
  {
    auto store = *JobStore::Open(path);
    Job nf4 = MakeJob("job-q", "acme", 1);
    nf4.spec.quantization = "nf4";
    ASSERT_TRUE(store->CreateJob(nf4, "fp", nullptr).ok());
    ASSERT_TRUE(store->CreateJob(MakeJob("job-b", "acme", 2), "fp", nullptr).ok());
  }
  auto store = *JobStore::Open(path);
  absl::StatusOr<Job> q = store->GetJob("job-q");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->spec.quantization, "nf4");
  absl::StatusOr<Job> b = store->GetJob("job-b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->spec.quantization, "none");
}

// shard_base is kept in the job's record: true reads back after the database
// is opened again; a job without it (as every job stored before the field
// existed) reads as false.
TEST(JobStoreTest, ShardBaseRoundTrips) {
  const std::string path = TempDb("shard_base");
  {
    auto store = *JobStore::Open(path);
    Job sharded = MakeJob("job-s", "acme", 1);
    sharded.spec.gpus = 8;
    sharded.spec.shard_base = true;
    ASSERT_TRUE(store->CreateJob(sharded, "fp", nullptr).ok());
    ASSERT_TRUE(store->CreateJob(MakeJob("job-w", "acme", 2), "fp", nullptr).ok());
  }
  auto store = *JobStore::Open(path);
  absl::StatusOr<Job> s = store->GetJob("job-s");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->spec.shard_base);
  EXPECT_EQ(s->spec.gpus, 8);
  absl::StatusOr<Job> w = store->GetJob("job-w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(w->spec.shard_base);
}

TEST(JobStoreTest, WalAndFullSync) {
  const std::string path = TempDb("pragmas");
  auto store = *JobStore::Open(path);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST(JobStoreTest, NewerSchemaIsRefused) {
  const std::string path = TempDb("schema");
  { auto store = *JobStore::Open(path); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  absl::StatusOr<std::unique_ptr<JobStore>> s = JobStore::Open(path);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("schema version 99"));
}

TEST(JobStoreTest, FilesArePerTenant) {
  auto store = *JobStore::Open(TempDb("files"));
  protocol::FileInfo f{"file-1", "train.jsonl", 10, "ab", 5, "files/file-1"};
  ASSERT_TRUE(store->AddFile("acme", f, "upl-1").ok());
  EXPECT_EQ(store->GetFile("acme", "file-1")->filename, "train.jsonl");
  EXPECT_EQ(store->GetFile("zeta", "file-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->GetFileByUpload("acme", "upl-1")->id, "file-1");
  EXPECT_EQ(store->GetFileByUpload("zeta", "upl-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->ListFiles("acme", 10)->size(), 1u);
  EXPECT_TRUE(store->ListFiles("zeta", 10)->empty());
}

// file.list's pages: newest first, `after` starts past a file of the
// tenant's; another tenant's id or an unknown one is NotFound.
TEST(JobStoreTest, ListFilesPagesNewestFirst) {
  auto store = *JobStore::Open(TempDb("file-pages"));
  for (int i = 1; i <= 5; ++i) {
    const std::string id = "file-" + std::to_string(i);
    ASSERT_TRUE(store
                    ->AddFile("acme", protocol::FileInfo{id, "t.jsonl", 1, "ab", i, "files/" + id},
                              "upl-" + id)
                    .ok());
  }
  ASSERT_TRUE(store
                  ->AddFile("zeta",
                            protocol::FileInfo{"file-z", "t.jsonl", 1, "ab", 9, "files/file-z"},
                            "upl-z")
                  .ok());
  auto ids = [](const std::vector<protocol::FileInfo>& files) {
    std::vector<std::string> out;
    for (const auto& f : files) out.push_back(f.id);
    return out;
  };
  EXPECT_THAT(ids(*store->ListFiles("acme", 2)), ::testing::ElementsAre("file-5", "file-4"));
  EXPECT_THAT(ids(*store->ListFiles("acme", 2, "file-4")),
              ::testing::ElementsAre("file-3", "file-2"));
  EXPECT_THAT(ids(*store->ListFiles("acme", 2, "file-2")), ::testing::ElementsAre("file-1"));
  EXPECT_TRUE(store->ListFiles("acme", 2, "file-1")->empty());
  absl::Status other = store->ListFiles("acme", 2, "file-z").status();
  EXPECT_EQ(other.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(protocol::ParamOf(other), "after");
  EXPECT_EQ(store->ListFiles("acme", 2, "file-none").status().code(), absl::StatusCode::kNotFound);
}

TEST(JobStoreTest, UnopenablePath) {
  absl::StatusOr<std::unique_ptr<JobStore>> s = JobStore::Open("/nonexistent/dir/x.db");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.status().message(), HasSubstr("/nonexistent/dir/x.db"));
}

}  // namespace
}  // namespace fjord::daemon
