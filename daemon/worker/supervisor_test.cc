#include "daemon/worker/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using Kind = WorkerUpdate::Kind;

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/fjsup-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    SupervisorOptions o;
    o.socket_dir = dir_;
    o.heartbeat_timeout_ms = 1000;
    o.stop_grace_ms = 1000;
    o.now_ms = [this] { return now_.load(); };
    sup_ = std::make_unique<WorkerSupervisor>(o);
  }
  void TearDown() override {
    sup_.reset();
    std::filesystem::remove_all(dir_);
  }
  WorkerSpec Fake(const std::string& job, std::vector<std::string> args) {
    WorkerSpec s;
    s.program = std::filesystem::absolute("daemon/worker/fake_worker").string();
    s.args = {"--report", sup_->EndpointFor(job)};
    s.args.insert(s.args.end(), args.begin(), args.end());
    return s;
  }
  // Polls (advancing the fake clock by advance_ms each round) until `job`
  // reports kExited or rounds run out.
  std::vector<WorkerUpdate> RunUntilExit(const std::string& job, int64_t advance_ms = 0, int rounds = 500) {
    std::vector<WorkerUpdate> all;
    for (int i = 0; i < rounds; ++i) {
      now_ += advance_ms;
      for (WorkerUpdate& u : sup_->Poll(20)) {
        const bool done = u.kind == Kind::kExited && u.job_id == job;
        all.push_back(std::move(u));
        if (done) return all;
      }
    }
    return all;
  }

  // The fake sends its events after installing its signal handlers: once one
  // arrived, a SIGTERM meets the handler (slow starts under sanitizers).
  void WaitForFirstEvent(const std::string& job) {
    for (int i = 0; i < 500; ++i) {
      for (const WorkerUpdate& u : sup_->Poll(20)) {
        if (u.kind == Kind::kEvent && u.job_id == job) return;
      }
    }
    FAIL() << "no event from " << job;
  }

  std::string dir_;
  std::atomic<int64_t> now_{0};
  std::unique_ptr<WorkerSupervisor> sup_;
};

TEST_F(SupervisorTest, EventsThenExit) {
  ASSERT_TRUE(sup_->Launch("ftjob-a", Fake("ftjob-a", {"--events", "3", "--exit-code", "0"})).ok());
  EXPECT_EQ(sup_->Launch("ftjob-a", Fake("ftjob-a", {})).code(), absl::StatusCode::kAlreadyExists);
  std::vector<WorkerUpdate> u = RunUntilExit("ftjob-a");
  std::vector<std::string> events;
  for (const auto& x : u) if (x.kind == Kind::kEvent) events.push_back(x.json);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2], "{\"type\":\"step\",\"step\":3,\"total_steps\":3}");
  ASSERT_FALSE(u.empty());
  EXPECT_EQ(u.back().kind, Kind::kExited);
  EXPECT_EQ(u.back().exit.exit_code, 0);
  EXPECT_FALSE(sup_->Running("ftjob-a"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/ftjob-a.sock"));
}

TEST_F(SupervisorTest, SilentWorkerIsKilledAfterHeartbeatTimeout) {
  ASSERT_TRUE(sup_->Launch("ftjob-b", Fake("ftjob-b", {"--silent", "--hang"})).ok());
  std::vector<WorkerUpdate> u = RunUntilExit("ftjob-b", /*advance_ms=*/100);
  ASSERT_GE(u.size(), 2u);
  EXPECT_EQ(u[u.size() - 2].kind, Kind::kHeartbeatTimeout);
  EXPECT_EQ(u.back().kind, Kind::kExited);
  EXPECT_EQ(u.back().exit.signal, SIGKILL);
}

TEST_F(SupervisorTest, HeartbeatingWorkerIsNotKilled) {
  ASSERT_TRUE(sup_->Launch("ftjob-c", Fake("ftjob-c", {"--hang"})).ok());
  // 3 s of wall time with the fake clock following it: heartbeats every 200 ms
  // keep the worker alive past the 1 s timeout.
  for (int i = 0; i < 60; ++i) {
    now_ += 50;
    for (const WorkerUpdate& x : sup_->Poll(50)) {
      EXPECT_NE(x.kind, Kind::kHeartbeatTimeout);
      EXPECT_NE(x.kind, Kind::kExited);
    }
  }
  EXPECT_TRUE(sup_->Running("ftjob-c"));
}

TEST_F(SupervisorTest, StopCheckpointsAndExits75) {
  ASSERT_TRUE(sup_->Launch("ftjob-d", Fake("ftjob-d", {"--events", "1", "--hang"})).ok());
  WaitForFirstEvent("ftjob-d");
  sup_->Stop("ftjob-d");
  std::vector<WorkerUpdate> u = RunUntilExit("ftjob-d");
  bool checkpoint = false;
  for (const auto& x : u) checkpoint |= x.kind == Kind::kEvent && x.json.find("checkpoint") != std::string::npos;
  EXPECT_TRUE(checkpoint);
  EXPECT_EQ(u.back().exit.exit_code, 75);
}

TEST_F(SupervisorTest, StopEscalatesToKillAfterGrace) {
  ASSERT_TRUE(sup_->Launch("ftjob-e", Fake("ftjob-e", {"--events", "1", "--hang", "--ignore-sigterm"})).ok());
  WaitForFirstEvent("ftjob-e");
  sup_->Stop("ftjob-e");
  std::vector<WorkerUpdate> u = RunUntilExit("ftjob-e", /*advance_ms=*/100);
  bool timed_out = false;
  for (const auto& x : u) timed_out |= x.kind == Kind::kStopTimeout;
  EXPECT_TRUE(timed_out);
  EXPECT_EQ(u.back().exit.signal, SIGKILL);
}

TEST_F(SupervisorTest, DeadlineBoundsAWorkerWithoutHeartbeats) {
  LaunchOptions lo;
  lo.expect_heartbeats = false;
  lo.deadline_ms = 5000;
  ASSERT_TRUE(sup_->Launch("ftjob-f", Fake("ftjob-f", {"--silent", "--hang"}), lo).ok());
  EXPECT_GT(sup_->Pid("ftjob-f"), 0);
  // Silent for 2 s of fake time: no heartbeat kill (not expected to beat).
  for (int i = 0; i < 20; ++i) {
    now_ += 100;
    for (const WorkerUpdate& u : sup_->Poll(5)) EXPECT_NE(u.kind, Kind::kHeartbeatTimeout);
  }
  EXPECT_TRUE(sup_->Running("ftjob-f"));
  std::vector<WorkerUpdate> u = RunUntilExit("ftjob-f", /*advance_ms=*/500);
  ASSERT_GE(u.size(), 2u);
  EXPECT_EQ(u[u.size() - 2].kind, Kind::kDeadline);
  EXPECT_EQ(u.back().exit.signal, SIGKILL);
}

}  // namespace
}  // namespace fjord::daemon
