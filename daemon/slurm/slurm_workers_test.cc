// SlurmWorkers against a fake of Slurm's client commands (the `run` seam):
// what it submits, how it reads Slurm's states, timeouts, and the CURVE
// report socket for real (ZeroMQ on loopback). tests/slurm runs it against
// a real Slurm cluster through fjordd.
#include "daemon/slurm/slurm_workers.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/worker_protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/net.h"

namespace fjord::daemon {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

// Slurm as its client commands answer.
struct FakeSlurm {
  std::mutex mu;
  std::map<std::string, SlurmJobInfo> jobs;
  std::vector<std::vector<std::string>> calls;
  std::string last_script;
  int next_id = 100;
  std::string sbatch_error;  // set: sbatch fails with it on stderr

  absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv, const std::string& in) {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back(argv);
    const std::string prog = argv[0].substr(argv[0].rfind('/') + 1);
    CommandResult r;
    r.exit_code = 0;
    const bool test_only = std::find(argv.begin(), argv.end(), "--test-only") != argv.end();
    if (prog == "sbatch") {
      if (!sbatch_error.empty()) {
        r.exit_code = 1;
        r.err = sbatch_error + "\n";
      } else if (!test_only) {
        last_script = in;
        const std::string id = std::to_string(next_id++);
        jobs[id] = SlurmJobInfo{id, "PENDING", "Priority", "", 0, 0};
        r.out = id + "\n";
      }
    } else if (prog == "squeue") {
      for (const auto& [id, j] : jobs)
        absl::StrAppend(&r.out, id, "|", j.state, "|", j.reason, "|", j.nodes, "\n");
    } else if (prog == "scontrol") {
      auto it = jobs.find(argv.back());
      if (it == jobs.end()) {
        r.exit_code = 1;
        r.err = "slurm_load_jobs error: Invalid job id specified\n";
      } else {
        const SlurmJobInfo& j = it->second;
        r.out = absl::StrCat("JobId=", j.id, " JobState=", j.state, " Reason=", j.reason,
                             " ExitCode=", j.exit_code, ":", j.signal, " NodeList=", j.nodes, "\n");
      }
    } else if (prog == "scancel") {
      if (argv[1] != "--signal=TERM") {
        auto it = jobs.find(argv.back());
        if (it != jobs.end()) it->second.state = "CANCELLED";
      }
    }
    return r;
  }
  void Set(const std::string& id, const std::string& state, const std::string& nodes = "",
           int code = 0) {
    std::lock_guard<std::mutex> lock(mu);
    jobs[id].state = state;
    jobs[id].reason = "None";
    jobs[id].nodes = nodes;
    jobs[id].exit_code = code;
  }
  bool Called(const std::vector<std::string>& argv_tail) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& c : calls) {
      if (c.size() >= argv_tail.size() &&
          std::equal(argv_tail.rbegin(), argv_tail.rend(), c.rbegin()))
        return true;
    }
    return false;
  }
};

class SlurmWorkersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("fjord-slurm-workers-", ::getpid(), "-", counter_++);
    std::filesystem::create_directories(dir_);
    port_ = FreeLoopbackPort();
    SlurmWorkersOptions o;
    o.slurm.ranks_per_node = 2;
    o.slurm.poll_interval_ms = 20;
    o.slurm.report_listen = absl::StrCat("tcp://127.0.0.1:", port_);
    o.state_dir = dir_.string();
    o.heartbeat_timeout_ms = 30000;
    o.stop_grace_ms = 60000;
    o.now_ms = [this] { return now_.load(); };
    o.run = [this](const std::vector<std::string>& argv, const std::string& in) {
      return slurm_.Run(argv, in);
    };
    absl::StatusOr<std::unique_ptr<SlurmWorkers>> w = SlurmWorkers::Start(std::move(o));
    ASSERT_TRUE(w.ok()) << w.status();
    workers_ = *std::move(w);
  }
  void TearDown() override {
    workers_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Collects until an update of `kind` for `job` arrives (5 s at most).
  std::optional<WorkerUpdate> WaitFor(WorkerUpdate::Kind kind, const std::string& job,
                                      int ms = 5000) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      std::vector<zmq::pollitem_t> items;
      workers_->AddPollItems(&items);
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(20));
      for (WorkerUpdate& u : workers_->Collect()) {
        seen_.push_back(u.kind);
        if (u.kind == kind && u.job_id == job) return u;
      }
    }
    return std::nullopt;
  }

  std::string Launch(const std::string& job) {
    WorkerSpec spec;
    spec.program = "/opt/fjord/bin/fjord-train";
    spec.args = {"--config", dir_.string() + "/job.yaml"};
    LaunchOptions lo;
    lo.cluster = true;
    lo.ranks = 2;
    absl::Status s = workers_->Launch(job, spec, lo);
    EXPECT_TRUE(s.ok()) << s;
    return workers_->ClusterJobId(job);
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  int port_ = 0;
  std::atomic<int64_t> now_{1000};
  FakeSlurm slurm_;
  std::unique_ptr<SlurmWorkers> workers_;
  std::vector<WorkerUpdate::Kind> seen_;
};

TEST_F(SlurmWorkersTest, AJobIsSubmittedWaitsRunsAndEnds) {
  const std::string id = Launch("job-1");
  EXPECT_EQ(id, "100");
  EXPECT_TRUE(workers_->Running("job-1"));
  EXPECT_THAT(slurm_.last_script, HasSubstr("exec srun --export=ALL --kill-on-bad-exit=1 "
                                            "'/opt/fjord/bin/fjord-train' '--config'"));
  EXPECT_TRUE(slurm_.Called({"--job-name=fjord-job-1", "--nodes=1", "--ntasks-per-node=2",
                             "--output=/dev/null", "--open-mode=append", "--export=NONE",
                             "--requeue", "--signal=TERM@120"}));
  std::optional<WorkerUpdate> pending = WaitFor(WorkerUpdate::Kind::kPending, "job-1");
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->detail, "Slurm job 100 pending: Priority");
  slurm_.Set("100", "RUNNING", "c1");
  std::optional<WorkerUpdate> started = WaitFor(WorkerUpdate::Kind::kStarted, "job-1");
  ASSERT_TRUE(started);
  EXPECT_EQ(started->detail, "c1");
  // Pause: every rank gets SIGTERM, checkpoints and exits 75.
  workers_->Stop("job-1");
  EXPECT_TRUE(slurm_.Called({"--signal=TERM", "100"}));
  slurm_.Set("100", "FAILED", "c1", 75);
  std::optional<WorkerUpdate> ended = WaitFor(WorkerUpdate::Kind::kExited, "job-1");
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->exit.exit_code, 75);
  EXPECT_EQ(ended->exit.signal, 0);
  EXPECT_FALSE(ended->final);
  EXPECT_FALSE(workers_->Running("job-1"));
}

TEST_F(SlurmWorkersTest, ASlurmJobCancelledOutsideFjordFailsForGood) {
  const std::string id = Launch("job-2");
  slurm_.Set(id, "CANCELLED");
  std::optional<WorkerUpdate> ended = WaitFor(WorkerUpdate::Kind::kExited, "job-2");
  ASSERT_TRUE(ended);
  EXPECT_TRUE(ended->final);
  EXPECT_THAT(ended->detail, HasSubstr("Slurm job 100 was cancelled outside fjord"));
}

TEST_F(SlurmWorkersTest, ASilentRunningJobIsCancelledAfterTheHeartbeatTimeout) {
  const std::string id = Launch("job-3");
  slurm_.Set(id, "RUNNING", "c1");
  ASSERT_TRUE(WaitFor(WorkerUpdate::Kind::kStarted, "job-3"));
  now_ += 31000;
  ASSERT_TRUE(WaitFor(WorkerUpdate::Kind::kHeartbeatTimeout, "job-3"));
  EXPECT_TRUE(slurm_.Called({"/usr/bin/scancel", id}));
  std::optional<WorkerUpdate> ended = WaitFor(WorkerUpdate::Kind::kExited, "job-3");
  ASSERT_TRUE(ended);
  EXPECT_FALSE(ended->final);  // fjordd cancelled it: lost, resumed if restarts are left
  EXPECT_THAT(ended->detail, HasSubstr("cancelled by fjordd"));
}

TEST_F(SlurmWorkersTest, AnAdoptedJobSlurmForgotEndsWithAClearCause) {
  workers_->Adopt("job-4", "555", /*running=*/true);
  std::optional<WorkerUpdate> ended = WaitFor(WorkerUpdate::Kind::kExited, "job-4");
  ASSERT_TRUE(ended);
  EXPECT_THAT(ended->detail, HasSubstr("Slurm no longer knows job 555"));
}

TEST_F(SlurmWorkersTest, RefusedAndUnreachableSubmissionsAreTold) {
  WorkerSpec spec;
  spec.program = "/opt/fjord/bin/fjord-train";
  slurm_.sbatch_error =
      "sbatch: error: Batch job submission failed: Requested node configuration is not available";
  absl::Status fits = workers_->CheckFits("job-5", spec, 2);
  EXPECT_EQ(fits.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(fits.message(), HasSubstr("Slurm would refuse the job (1 node(s) x 2 rank(s)): "
                                        "Batch job submission failed: Requested node "
                                        "configuration is not available"));
  LaunchOptions lo;
  lo.cluster = true;
  EXPECT_EQ(workers_->Launch("job-5", spec, lo).code(), absl::StatusCode::kFailedPrecondition);
  slurm_.sbatch_error =
      "sbatch: error: Batch job submission failed: Unable to contact slurm "
      "controller (connect failure)";
  EXPECT_EQ(workers_->Launch("job-5", spec, lo).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(workers_->Running("job-5"));
  // A shape no node layout holds never reaches sbatch.
  lo.ranks = 3;
  slurm_.sbatch_error.clear();
  EXPECT_EQ(workers_->Launch("job-5", spec, lo).code(), absl::StatusCode::kInvalidArgument);
}

std::map<std::string, std::string> ParseKeys(const std::string& text) {
  std::map<std::string, std::string> k;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    if (kv.size() == 2 && !absl::StartsWith(line, "#")) k[kv[0]] = kv[1];
  }
  return k;
}

TEST_F(SlurmWorkersTest, ReportsAreHeardOnlyFromTheJobsOwnKey) {
  Launch("job-6");
  std::optional<std::string> text = workers_->ReportKeysFor("job-6");
  ASSERT_TRUE(text);
  std::map<std::string, std::string> keys = ParseKeys(*text);
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys["public_key"], workers_->JobPublicKey("job-6"));
  EXPECT_NE(workers_->JobPublicKey("job-6"), workers_->JobPublicKey("job-7"));
  zmq::context_t ctx;
  auto push = [&](const std::string& pub, const std::string& sec) {
    auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::push);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::curve_serverkey, keys["server_public_key"]);
    s->set(zmq::sockopt::curve_publickey, pub);
    s->set(zmq::sockopt::curve_secretkey, sec);
    s->connect(workers_->EndpointFor("job-6"));
    return s;
  };
  protocol::WorkerMessage step;
  protocol::WorkerStep st;
  st.loss = 1.5;
  step.step = 3;
  step.payload = st;
  const std::string encoded = protocol::EncodeWorkerMessage(step);
  // A stranger's key: refused at the handshake, nothing heard.
  absl::StatusOr<CurveKeyPair> stranger = GenerateCurveKeyPair();
  ASSERT_TRUE(stranger.ok());
  auto bad = push(stranger->public_key, stranger->secret_key);
  bad->send(zmq::buffer(encoded), zmq::send_flags::dontwait);
  EXPECT_FALSE(WaitFor(WorkerUpdate::Kind::kEvent, "job-6", 700));
  // The job's own key: heard, as job-6.
  auto good = push(keys["public_key"], keys["secret_key"]);
  good->send(zmq::buffer(encoded), zmq::send_flags::none);
  std::optional<WorkerUpdate> ev = WaitFor(WorkerUpdate::Kind::kEvent, "job-6");
  ASSERT_TRUE(ev);
  ASSERT_TRUE(ev->message.ok());
  EXPECT_EQ(ev->message->step, 3);
}

TEST_F(SlurmWorkersTest, TheReportKeySurvivesARestart) {
  const std::string before = workers_->JobPublicKey("job-8");
  workers_.reset();
  SlurmWorkersOptions o;
  o.slurm.report_listen = absl::StrCat("tcp://127.0.0.1:", FreeLoopbackPort());
  o.state_dir = dir_.string();
  o.run = [this](const std::vector<std::string>& argv, const std::string& in) {
    return slurm_.Run(argv, in);
  };
  absl::StatusOr<std::unique_ptr<SlurmWorkers>> again = SlurmWorkers::Start(std::move(o));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->JobPublicKey("job-8"), before);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "report.key"));
  EXPECT_EQ(
      std::filesystem::status(dir_ / "report.key").permissions() & std::filesystem::perms::all,
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

}  // namespace
}  // namespace fjord::daemon
