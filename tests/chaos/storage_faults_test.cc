// Storage faults on a real fjordd (loopback, CURVE): a storage root that
// fills up mid-checkpoint (a small tmpfs the test mounts), one made
// read-only (a read-only bind mount over it) or vanishing while jobs run,
// one missing when the daemon starts, and a worker that leaves a torn
// adapter. Each must be reported (the client's error, the job's error, the
// log, /healthz), never crash the daemon, never lose the previous checkpoint
// and never report a corrupt adapter as done.
//
// Mounting needs root with CAP_SYS_ADMIN (CI runs as root): where mount(2) is
// refused, those tests are skipped saying so.
//
// What a fault does to the checkpoint itself (ENOSPC mid-file or writing the
// manifest, a failing fsync, rename into place, directory fsync or read
// during verification, a read-only or vanished root) is tested without root
// or mounts in runtime/train/checkpoint_test.cc, on a FaultInjectionEnv over
// the POSIX Env and over MemEnv. These tests keep what an Env inside the test
// process cannot model: a fault that the kernel gives to another process (the
// real fjord-train or the fake worker, whose Env a test cannot replace) and
// what fjordd then reports, requeues, refuses and recovers from.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/train/checkpoint.h"
#include "tests/integration/daemon_harness.h"

namespace fjord::testing {
namespace {

using protocol::Job;
using protocol::JobStatus;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A tmpfs of `bytes` mounted at `dir` for the guard's lifetime (detached on
// destruction, so open files of dead processes cannot keep it busy).
class Tmpfs {
 public:
  static std::unique_ptr<Tmpfs> Mount(const std::string& dir, int64_t bytes, std::string* why) {
    fs::create_directories(dir);
    const std::string opts = absl::StrCat("size=", bytes, ",mode=0755");
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      *why =
          absl::StrCat("mount -t tmpfs on ", dir, " is not permitted here (", std::strerror(errno),
                       "); these storage-fault tests need root with CAP_SYS_ADMIN");
      return nullptr;
    }
    return std::unique_ptr<Tmpfs>(new Tmpfs(dir));
  }
  ~Tmpfs() { ::umount2(dir_.c_str(), MNT_DETACH); }

  // Fills the file system with `path` until a write fails with ENOSPC, then
  // frees `leave` bytes again.
  void Fill(const std::string& path, int64_t leave) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const std::string chunk(4096, 'f');
    int64_t written = 0;
    while (true) {
      const ssize_t n = ::write(fd, chunk.data(), chunk.size());
      if (n <= 0) {
        ASSERT_EQ(errno, ENOSPC);
        break;
      }
      written += n;
    }
    ASSERT_EQ(::ftruncate(fd, std::max<int64_t>(0, written - leave)), 0);
    ::close(fd);
  }

 private:
  explicit Tmpfs(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// Makes `dir` read-only for every path lookup from now on: a read-only bind
// mount of it on top of itself (remounting the file system itself read-only
// is refused while a process has a file open for writing, as the daemon and
// its workers do). Removed by Restore() or the destructor.
class ReadOnlyBind {
 public:
  static std::unique_ptr<ReadOnlyBind> Make(const std::string& dir, std::string* why) {
    if (::mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      *why = absl::StrCat("mount --bind on ", dir, " is not permitted here (", std::strerror(errno),
                          "); this storage-fault test needs root with CAP_SYS_ADMIN");
      return nullptr;
    }
    if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      *why =
          absl::StrCat("remounting the bind of ", dir, " read-only failed: ", std::strerror(errno));
      ::umount2(dir.c_str(), MNT_DETACH);
      return nullptr;
    }
    return std::unique_ptr<ReadOnlyBind>(new ReadOnlyBind(dir));
  }
  void Restore() {
    if (!dir_.empty()) ::umount2(dir_.c_str(), MNT_DETACH);
    dir_.clear();
  }
  ~ReadOnlyBind() { Restore(); }

 private:
  explicit ReadOnlyBind(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

std::string DemoData(int n) {
  std::ifstream f("tools/demo/out/data/train.jsonl");
  std::string line, out;
  for (int i = 0; i < n && std::getline(f, line); ++i) out += line + "\n";
  return out;
}

HarnessOptions TrainerOptions() {
  HarnessOptions o;
  o.worker_program = fs::absolute("lora/cli/fjord-train").string();
  o.model_dir = fs::absolute("tools/demo/out/model").string();
  o.worker_extra =
      "  args: [\"--set\", \"training.device=cpu\", \"--set\", \"training.threads=1\"]\n";
  o.heartbeat_timeout_s = 60;
  o.validation_timeout_s = 120;
  o.cpu_slots = 1;
  return o;
}

protocol::JobSpec TrainerSpec(Client& c, int steps) {
  protocol::JobSpec spec;
  absl::StatusOr<protocol::FileInfo> f = c.UploadBytes(DemoData(32), "train.jsonl");
  EXPECT_TRUE(f.ok()) << f.status();
  spec.model = "tiny";
  spec.training_file = f.ok() ? f->id : "";
  spec.hyperparameters.max_steps = steps;
  spec.hyperparameters.batch_size = 2;
  spec.hyperparameters.max_length = 128;
  spec.hyperparameters.checkpoint_every_steps = 1;
  spec.lora.r = 8;
  spec.max_restarts = 1;
  return spec;
}

int64_t DirBytes(const std::string& dir) {
  int64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  }
  return n;
}

std::vector<std::string> Temporaries(const std::string& ckpt_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(ckpt_dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), ".tmp-"))
      out.push_back(it->path().string());
  }
  return out;
}

// The storage root fills up while the real trainer writes a checkpoint: the
// write fails, the previous checkpoint is intact, the job is requeued and
// then failed with RESOURCE_EXHAUSTED saying the disk is full, no adapter is
// reported, the daemon keeps serving, and once space is freed a new job on
// the same daemon succeeds.
TEST(StorageFaultsTest, FullDiskMidCheckpointKeepsThePreviousOneAndNeverReportsAnAdapter) {
  DaemonHarness h(TrainerOptions());
  std::string why;
  std::unique_ptr<Tmpfs> tmpfs = Tmpfs::Mount(h.storage(), 16 << 20, &why);
  if (!tmpfs) GTEST_SKIP() << why;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Connect(h.acme_keys(), 20000, 2);
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(TrainerSpec(*acme, 200)));
  const std::string ckpts = h.storage() + "/acme/jobs/" + job.id + "/checkpoints";
  ASSERT_OK_AND_ASSIGN(
      running,
      h.WaitFor(
          *acme, job.id,
          [](const Job& j) { return j.latest_checkpoint && j.latest_checkpoint->step >= 2; }, 240));
  (void)running;
  // Leave room for about half a checkpoint: the next one fails part-way.
  const int64_t ckpt_bytes = DirBytes(train::ListCheckpoints(ckpts).back().dir);
  ASSERT_GT(ckpt_bytes, 100000);
  ASSERT_NO_FATAL_FAILURE(tmpfs->Fill(h.storage() + "/filler", ckpt_bytes / 2));

  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 240));
  const std::string worker_log = ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log");
  EXPECT_EQ(done.status, JobStatus::kFailed) << worker_log;
  EXPECT_EQ(done.restarts, 1);  // requeued once, as max_restarts says, then failed
  ASSERT_TRUE(done.error.has_value());
  EXPECT_EQ(done.error->code, "RESOURCE_EXHAUSTED") << done.error->message;
  EXPECT_THAT(done.error->message, HasSubstr("No space left on device"));
  EXPECT_FALSE(done.error->user_error);
  EXPECT_TRUE(done.result_adapter_path.empty());
  EXPECT_FALSE(fs::exists(h.storage() + "/acme/jobs/" + job.id + "/adapter"));
  EXPECT_EQ(acme->ListAdapterFiles(job.id).status().code(), absl::StatusCode::kFailedPrecondition);
  // The newest checkpoint is whole (its manifest verifies), and the failed
  // write left no temporary behind.
  std::vector<std::string> skipped;
  absl::StatusOr<train::FoundCheckpoint> newest = train::FindLatestCheckpoint(ckpts, &skipped);
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_TRUE(skipped.empty()) << skipped[0];
  EXPECT_GE(newest->step, 2);
  EXPECT_TRUE(train::VerifyCheckpoint(newest->dir).ok());
  EXPECT_THAT(Temporaries(ckpts), ::testing::IsEmpty());
  EXPECT_TRUE(acme->Ping().ok());

  // Space again: the same daemon runs a new job to the end.
  fs::remove(h.storage() + "/filler");
  ASSERT_OK_AND_ASSIGN(again, acme->CreateJob(TrainerSpec(*acme, 2)));
  ASSERT_OK_AND_ASSIGN(again_done, h.WaitForFinal(*acme, again.id, 240));
  EXPECT_EQ(again_done.status, JobStatus::kSucceeded)
      << (again_done.error ? again_done.error->message : "");
}

// The storage root goes read-only under a running job (the fake worker): new
// uploads and jobs get UNAVAILABLE naming the read-only root, /healthz says
// so, the running job's checkpoint fails and it waits requeued (not failed),
// job.get/list keep working; when the root is writable again the job resumes
// from its newest checkpoint and succeeds, and new work is accepted.
TEST(StorageFaultsTest, ReadOnlyStorageRootIsReportedAndJobsWaitForIt) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 60, "step_ms": 30, "checkpoint_every": 3})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(
      h.WaitFor(*acme, job.id, [](const Job& j) { return j.latest_checkpoint.has_value(); }).ok());

  std::string why;
  std::unique_ptr<ReadOnlyBind> read_only = ReadOnlyBind::Make(h.storage(), &why);
  if (!read_only) GTEST_SKIP() << why;
  absl::Status up = acme->UploadBytes("{}\n", "more.jsonl").status();
  EXPECT_EQ(up.code(), absl::StatusCode::kUnavailable) << up;
  EXPECT_THAT(up.message(),
              HasSubstr("storage root " + h.storage() + " is on a read-only file system"));
  absl::Status create = acme->CreateJob(spec).status();
  EXPECT_EQ(create.code(), absl::StatusCode::kUnavailable) << create;
  EXPECT_THAT(create.message(), HasSubstr("read-only"));
  httplib::Client http("127.0.0.1", h.metrics_port());
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_THAT(health->body, HasSubstr("read-only"));
  EXPECT_THAT(http.Get("/metrics")->body, HasSubstr("fjord_storage_available 0"));
  // The worker's next checkpoint fails: requeued, and it waits.
  ASSERT_OK_AND_ASSIGN(waiting, h.WaitForStatus(*acme, job.id, JobStatus::kRequeued, 30));
  ASSERT_TRUE(waiting.error.has_value());
  EXPECT_THAT(waiting.error->message, HasSubstr("Read-only file system"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_OK_AND_ASSIGN(still, acme->GetJob(job.id));
  EXPECT_EQ(still.status, JobStatus::kRequeued);
  EXPECT_TRUE(acme->ListJobs().ok());
  EXPECT_TRUE(acme->Ping().ok());
  EXPECT_THAT(h.log(), HasSubstr("storage root unavailable"));

  read_only->Restore();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 60));
  EXPECT_EQ(done.status, JobStatus::kSucceeded) << (done.error ? done.error->message : "");
  EXPECT_EQ(done.restarts, 1);
  EXPECT_EQ(http.Get("/healthz")->status, 200);
  EXPECT_TRUE(acme->UploadBytes("{}\n", "more.jsonl").ok());
  EXPECT_THAT(h.log(), HasSubstr("storage root is available again"));
}

// The storage root vanishes under a running job (an unmounted or lost
// network file system): the daemon keeps serving what lives in its own state
// (job.get, job.list, ping), refuses uploads and new jobs with UNAVAILABLE
// naming the missing root, /healthz says so, the worker's next checkpoint
// fails without re-creating the tree, and the job waits requeued instead of
// failing. When the same storage is back, the job resumes from its newest
// checkpoint and succeeds. A job whose directory did not come back fails
// saying so.
TEST(StorageFaultsTest, VanishedStorageRootIsReportedNotRebuilt) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 60, "step_ms": 30, "checkpoint_every": 3})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  protocol::JobSpec other =
      SpecWithData(*acme, FakeData(R"({"steps": 60, "step_ms": 30, "checkpoint_every": 3})"));
  ASSERT_TRUE(
      h.WaitFor(*acme, job.id, [](const Job& j) { return j.latest_checkpoint.has_value(); }).ok());
  ASSERT_OK_AND_ASSIGN(queued, acme->CreateJob(other));  // the harness has 2 CPU slots: both run
  ASSERT_TRUE(h.WaitFor(*acme, queued.id, [](const Job& j) {
                 return j.latest_checkpoint.has_value();
               }).ok());

  // "Unmount": the tree moves away (kept, to come back later).
  const std::string away = h.dir() + "/storage-away";
  fs::rename(h.storage(), away);
  absl::Status up = acme->UploadBytes("{}\n", "more.jsonl").status();
  EXPECT_EQ(up.code(), absl::StatusCode::kUnavailable) << up;
  EXPECT_THAT(up.message(), HasSubstr("storage root " + h.storage() +
                                      " is not accessible: No such file or directory"));
  absl::Status create = acme->CreateJob(spec).status();
  EXPECT_EQ(create.code(), absl::StatusCode::kUnavailable) << create;
  httplib::Client http("127.0.0.1", h.metrics_port());
  EXPECT_EQ(http.Get("/healthz")->status, 503);
  for (const std::string& id : {job.id, queued.id}) {
    ASSERT_OK_AND_ASSIGN(waiting, h.WaitForStatus(*acme, id, JobStatus::kRequeued, 30));
    ASSERT_TRUE(waiting.error.has_value());
    EXPECT_THAT(waiting.error->message, HasSubstr("No such file or directory"));
  }
  EXPECT_FALSE(fs::exists(h.storage())) << "a worker re-created the vanished storage root";
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_OK_AND_ASSIGN(still, acme->GetJob(job.id));
  EXPECT_EQ(still.status, JobStatus::kRequeued);
  EXPECT_TRUE(acme->ListJobs().ok());
  EXPECT_TRUE(acme->Ping().ok());

  // Back, but one job's directory is lost: that job fails saying so, the
  // other resumes where it was and succeeds.
  fs::remove_all(away + "/acme/jobs/" + queued.id);
  fs::rename(away, h.storage());
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 60));
  EXPECT_EQ(done.status, JobStatus::kSucceeded) << (done.error ? done.error->message : "");
  ASSERT_OK_AND_ASSIGN(lost, h.WaitForFinal(*acme, queued.id, 60));
  EXPECT_EQ(lost.status, JobStatus::kFailed);
  ASSERT_TRUE(lost.error.has_value());
  EXPECT_THAT(lost.error->message,
              HasSubstr("the job's directory " + h.storage() + "/acme/jobs/" + queued.id));
  EXPECT_THAT(lost.error->message, HasSubstr("is gone"));
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_GE(starts[1], 3);  // resumed from a checkpoint, not from the start
  EXPECT_EQ(http.Get("/healthz")->status, 200);
  EXPECT_TRUE(acme->UploadBytes("{}\n", "more.jsonl").ok());
}

// A missing storage root at start: fjordd exits 1 saying which path, and
// --check-config reports it (exit 2); neither crashes.
TEST(StorageFaultsTest, MissingStorageRootAtStartIsReported) {
  HarnessOptions o;
  DaemonHarness probe(o);
  o.storage_root = probe.dir() + "/no-such-root";
  DaemonHarness h(o);
  fs::create_directories(h.dir() + "/state");
  for (const bool check : {false, true}) {
    daemon::WorkerSpec spec;
    spec.program = fs::absolute("daemon/server/fjordd").string();
    spec.args = {"--config", h.config_path()};
    if (check) spec.args.push_back("--check-config");
    spec.log_path = h.dir() + (check ? "/check.log" : "/start.log");
    ASSERT_OK_AND_ASSIGN(p, daemon::WorkerProcess::Start(spec));
    std::optional<daemon::WorkerExit> e = p->Wait(20000);
    ASSERT_TRUE(e.has_value());
    const std::string log = ReadFile(spec.log_path);
    EXPECT_TRUE(e->normal()) << e->Describe();
    EXPECT_EQ(e->exit_code, check ? 2 : 1) << log;
    EXPECT_THAT(log, HasSubstr(o.storage_root));
    EXPECT_THAT(log, HasSubstr("is not a directory"));
  }
}

// A worker that exits 0 after leaving a torn adapter_model.safetensors: the
// daemon checks the adapter before reporting it, so the job is requeued and
// then failed saying the adapter is unusable, never succeeded.
TEST(StorageFaultsTest, TornAdapterIsNeverReportedAsDone) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 2, "step_ms": 5, "adapter": "truncated"})"));
  spec.max_restarts = 1;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(done.status, JobStatus::kFailed);
  EXPECT_EQ(done.restarts, 1);
  ASSERT_TRUE(done.error.has_value());
  EXPECT_FALSE(done.error->user_error);
  EXPECT_THAT(done.error->message, HasSubstr("the worker exited 0 but its adapter is unusable"));
  EXPECT_THAT(done.error->message, HasSubstr("adapter_model.safetensors"));
  EXPECT_TRUE(done.result_adapter_path.empty());
  EXPECT_EQ(acme->ListAdapterFiles(job.id).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(h.log(), HasSubstr("the worker's adapter is unusable"));
}

}  // namespace
}  // namespace fjord::testing
