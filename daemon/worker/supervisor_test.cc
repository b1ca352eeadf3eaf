#include "daemon/worker/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <variant>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using Kind = WorkerUpdate::Kind;
using ::testing::HasSubstr;

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
  std::vector<WorkerUpdate> RunUntilExit(const std::string& job, int64_t advance_ms = 0,
                                         int rounds = 500) {
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
  std::vector<const WorkerUpdate*> events;
  for (const auto& x : u)
    if (x.kind == Kind::kEvent) events.push_back(&x);
  ASSERT_EQ(events.size(), 3u);  // the heartbeats are not reported
  EXPECT_EQ(events[2]->json, "{\"step\":3,\"total_steps\":3,\"type\":\"step\"}");
  ASSERT_TRUE(events[2]->message.ok()) << events[2]->message.status();
  EXPECT_TRUE(std::holds_alternative<protocol::WorkerStep>(events[2]->message->payload));
  EXPECT_EQ(events[2]->message->step, 3);
  EXPECT_EQ(events[2]->message->total_steps, 3);
  ASSERT_FALSE(u.empty());
  EXPECT_EQ(u.back().kind, Kind::kExited);
  EXPECT_EQ(u.back().exit.exit_code, protocol::kWorkerExitOk);
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
  for (const auto& x : u) {
    checkpoint |= x.kind == Kind::kEvent && x.message.ok() &&
                  std::holds_alternative<protocol::WorkerCheckpoint>(x.message->payload);
  }
  EXPECT_TRUE(checkpoint);
  EXPECT_EQ(u.back().exit.exit_code, protocol::kWorkerExitStopped);
}

TEST_F(SupervisorTest, StopEscalatesToKillAfterGrace) {
  ASSERT_TRUE(
      sup_->Launch("ftjob-e", Fake("ftjob-e", {"--events", "1", "--hang", "--ignore-sigterm"}))
          .ok());
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

// Heartbeats are told by decoding, not by the bytes "type":"heartbeat": one
// with spaces is a heartbeat (it was reported as an event before), an event
// whose nested object says "type":"heartbeat" is an event (it was dropped),
// and bytes that are not a worker message are reported with the reason.
// Every message, decodable or not, keeps the worker alive.
TEST_F(SupervisorTest, HeartbeatsAreRecognisedByDecoding) {
  ASSERT_TRUE(sup_->Launch("ftjob-g", Fake("ftjob-g", {"--silent", "--hang"})).ok());
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 0);
  push.connect(sup_->EndpointFor("ftjob-g"));
  auto send = [&](const std::string& s) { push.send(zmq::buffer(s), zmq::send_flags::none); };
  // Polls until `n` messages of ftjob-g arrived (heartbeats are not reported,
  // so a marker event follows what is expected to be dropped).
  auto collect = [&](size_t n) {
    std::vector<WorkerUpdate> got;
    for (int i = 0; i < 500 && got.size() < n; ++i) {
      for (WorkerUpdate& x : sup_->Poll(20)) {
        EXPECT_NE(x.kind, Kind::kHeartbeatTimeout);
        if (x.kind == Kind::kEvent && x.job_id == "ftjob-g") got.push_back(std::move(x));
      }
    }
    return got;
  };
  send("{ \"type\" : \"heartbeat\", \"pid\": 1 }");
  send("{\"type\":\"step\",\"step\":2,\"x\":{\"type\":\"heartbeat\"}}");
  send("not json");
  send("{\"type\":\"log\",\"message\":\"marker\"}");
  std::vector<WorkerUpdate> got = collect(3);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got[0].message.ok()) << got[0].message.status();
  EXPECT_EQ(protocol::WorkerMessageTypeName(*got[0].message), "step");
  EXPECT_EQ(got[0].message->step, 2);
  EXPECT_EQ(got[1].json, "not json");
  EXPECT_EQ(got[1].message.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got[1].message.status().message(), HasSubstr("not valid JSON"));
  ASSERT_TRUE(got[2].message.ok());
  EXPECT_EQ(protocol::WorkerEventText(*got[2].message), "marker");

  // The worker itself is silent: only these messages keep it alive past the
  // 1 s timeout.
  for (int round = 0; round < 3; ++round) {
    now_ += 800;
    send(round == 1 ? "garbage" : "{\"type\": \"heartbeat\"}");
    send("{\"type\":\"log\",\"message\":\"marker\"}");
    got = collect(round == 1 ? 2 : 1);
    EXPECT_EQ(got.size(), round == 1 ? 2u : 1u);
  }
  EXPECT_TRUE(sup_->Running("ftjob-g"));
  now_ += 1100;  // silence: killed
  std::vector<WorkerUpdate> u = RunUntilExit("ftjob-g");
  ASSERT_GE(u.size(), 2u);
  EXPECT_EQ(u[u.size() - 2].kind, Kind::kHeartbeatTimeout);
}

}  // namespace
}  // namespace fjord::daemon
