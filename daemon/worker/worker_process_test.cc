#include "daemon/worker/worker_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class WorkerProcessTest : public ::testing::Test {
 protected:
  std::string LogPath() {
    return ::testing::TempDir() + "/worker-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".log";
  }
};

TEST_F(WorkerProcessTest, ArgumentsReachTheProgramLiterallyWithoutAShell) {
  WorkerSpec spec;
  spec.program = "/bin/echo";
  spec.args = {"job; rm -rf /tmp/x", "$(whoami)", "`id`"};
  spec.log_path = LogPath();
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok()) << w.status();
  auto e = (*w)->Wait(10000);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->exit_code, 0);
  EXPECT_EQ(ReadFile(spec.log_path), "job; rm -rf /tmp/x $(whoami) `id`\n");
}

TEST_F(WorkerProcessTest, StdoutCanGoToItsOwnFile) {
  WorkerSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "echo report; echo warning >&2"};
  spec.log_path = LogPath();
  spec.stdout_path = LogPath() + ".stdout";
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Wait(10000).has_value());
  EXPECT_EQ(ReadFile(spec.stdout_path), "report\n");
  EXPECT_EQ(ReadFile(spec.log_path), "warning\n");
}

// A daemon killed with -9 takes its workers with it (PR_SET_PDEATHSIG).
TEST_F(WorkerProcessTest, WorkerDiesWithItsParent) {
  const std::string pid_file = LogPath() + ".pid";
  const pid_t daemon = ::fork();
  ASSERT_GE(daemon, 0);
  if (daemon == 0) {
    WorkerSpec spec;
    spec.program = "/bin/sleep";
    spec.args = {"60"};
    auto w = WorkerProcess::Start(spec);
    if (!w.ok()) ::_exit(1);
    std::ofstream(pid_file) << (*w)->pid();
    ::pause();
    ::_exit(0);
  }
  pid_t worker = 0;
  for (int i = 0; i < 500 && worker == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::ifstream(pid_file) >> worker;
  }
  ASSERT_GT(worker, 0);
  EXPECT_EQ(::kill(worker, 0), 0);
  ::kill(daemon, SIGKILL);
  ::waitpid(daemon, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    // The worker is reparented and reaped by init (or a subreaper); gone or a zombie.
    std::ifstream stat("/proc/" + std::to_string(worker) + "/stat");
    std::string line;
    std::getline(stat, line);
    gone = line.empty() || line.find(") Z") != std::string::npos;
  }
  EXPECT_TRUE(gone);
}

// The NoNewPrivs line of /proc/self/status as the worker's program sees it.
std::string NoNewPrivsOfAWorker(bool no_new_privs, const std::string& log) {
  WorkerSpec spec;
  spec.program = "/bin/grep";
  spec.args = {"^NoNewPrivs:", "/proc/self/status"};
  spec.log_path = log;
  spec.no_new_privs = no_new_privs;
  auto w = WorkerProcess::Start(spec);
  if (!w.ok()) return w.status().ToString();
  auto e = (*w)->Wait(10000);
  if (!e.has_value() || e->exit_code != 0) return "grep failed";
  return ReadFile(log);
}

TEST_F(WorkerProcessTest, NoNewPrivsIsSetBeforeExec) {
  EXPECT_EQ(NoNewPrivsOfAWorker(true, LogPath()), "NoNewPrivs:\t1\n");
  // Off: the worker has what this process has (a sandbox may set it already).
  const std::string own = ReadFile("/proc/self/status");
  const std::string mine = own.substr(own.find("NoNewPrivs:"), std::string("NoNewPrivs:\t0\n").size());
  EXPECT_EQ(NoNewPrivsOfAWorker(false, LogPath() + ".off"), mine);
}

TEST_F(WorkerProcessTest, EnvironmentIsExactlyTheSpecPlusCudaDevices) {
  ::setenv("FJORD_DAEMON_SECRET", "do-not-leak", 1);
  WorkerSpec spec;
  spec.program = "/usr/bin/env";
  spec.env = {{"FOO", "bar"}, {"CUDA_VISIBLE_DEVICES", "7"}};
  spec.cuda_visible_devices = "1,3";
  spec.log_path = LogPath();
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Wait(10000).has_value());
  const std::string out = ReadFile(spec.log_path);
  EXPECT_THAT(out, HasSubstr("FOO=bar\n"));
  EXPECT_THAT(out, HasSubstr("CUDA_VISIBLE_DEVICES=1,3\n"));
  EXPECT_THAT(out, Not(HasSubstr("CUDA_VISIBLE_DEVICES=7")));
  EXPECT_THAT(out, Not(HasSubstr("FJORD_DAEMON_SECRET")));
}

TEST_F(WorkerProcessTest, ReportsExitCode) {
  WorkerSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "exit 3"};
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok());
  auto e = (*w)->Wait(10000);
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->normal());
  EXPECT_EQ(e->exit_code, 3);
  EXPECT_EQ(e->Describe(), "exit code 3");
}

TEST_F(WorkerProcessTest, TerminateSendsSigterm) {
  WorkerSpec spec;
  spec.program = "/bin/sleep";
  spec.args = {"100"};
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE((*w)->Poll().has_value());
  (*w)->Terminate();
  auto e = (*w)->Wait(10000);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->signal, SIGTERM);
  EXPECT_THAT(e->Describe(), HasSubstr("signal 15"));
}

TEST_F(WorkerProcessTest, KillReachesTheWholeProcessGroup) {
  WorkerSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "sleep 100 & echo $!; wait"};
  spec.log_path = LogPath();
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok());
  pid_t grandchild = 0;
  for (int i = 0; i < 500 && grandchild == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::string s = ReadFile(spec.log_path);
    if (!s.empty() && s.back() == '\n') grandchild = std::stoi(s);
  }
  ASSERT_GT(grandchild, 0);
  EXPECT_EQ(::kill(grandchild, 0), 0);
  (*w)->Kill();
  ASSERT_TRUE((*w)->Wait(10000).has_value());
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    // The grandchild is reparented to init, which reaps it once killed.
    gone = ::kill(grandchild, 0) != 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(gone) << "grandchild " << grandchild << " survived";
}

TEST_F(WorkerProcessTest, DestructorKillsARunningWorker) {
  pid_t pid = 0;
  {
    WorkerSpec spec;
    spec.program = "/bin/sleep";
    spec.args = {"100"};
    auto w = WorkerProcess::Start(spec);
    ASSERT_TRUE(w.ok());
    pid = (*w)->pid();
  }
  EXPECT_NE(::kill(pid, 0), 0);
}

TEST_F(WorkerProcessTest, RefusesRelativeAndMissingPrograms) {
  WorkerSpec spec;
  spec.program = "fjord-train";
  EXPECT_EQ(WorkerProcess::Start(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.program = "/nonexistent/fjord-train";
  auto w = WorkerProcess::Start(spec);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(w.status().message(), HasSubstr("/nonexistent/fjord-train"));
}

}  // namespace
}  // namespace fjord::daemon
