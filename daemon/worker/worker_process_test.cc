#include "daemon/worker/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

// The worker's ids in the tests that switch to them: high, unused, no passwd
// entry needed.
constexpr uid_t kWorkerUid = 61001;
constexpr gid_t kWorkerGid = 61001;

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
  const std::string mine =
      own.substr(own.find("NoNewPrivs:"), std::string("NoNewPrivs:\t0\n").size());
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

// ---- the worker's files are opened as the worker, links and FIFOs refused ----

void WriteFile(const std::string& path, const std::string& content, mode_t mode) {
  std::ofstream(path) << content;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

struct stat StatOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

// A directory under /tmp (the test's own temp dir may sit below a 0700
// directory that another uid cannot cross), removed with the object.
class ScratchDir {
 public:
  // owner: chown'd to it (with kWorkerGid) when set, else the test's.
  explicit ScratchDir(std::optional<uid_t> owner = std::nullopt, mode_t mode = 0755) {
    char tmpl[] = "/tmp/fjwp-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path_ = tmpl;
    EXPECT_EQ(::chmod(path_.c_str(), mode), 0) << path_;
    if (owner) {
      EXPECT_EQ(::chown(path_.c_str(), *owner, kWorkerGid), 0) << path_;
    }
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

WorkerSpec AsWorker(const std::string& program, std::vector<std::string> args) {
  WorkerSpec spec;
  spec.program = program;
  spec.args = std::move(args);
  spec.uid = kWorkerUid;
  spec.gid = kWorkerGid;
  return spec;
}

// The attack: a worker replaced its worker.log with a symbolic link to a
// root-only file; the next launch must not append to (or hand the worker a
// descriptor for) that file.
TEST_F(WorkerProcessTest, RefusesASymlinkedLogAndLeavesTheRootOnlyTargetAlone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switches to uid " << kWorkerUid << ")";
  ScratchDir root_only;
  const std::string secret = root_only.path() + "/shadow";
  WriteFile(secret, "root-only bytes\n", 0600);
  ScratchDir job(kWorkerUid);
  const std::string log = job.path() + "/worker.log";
  ASSERT_EQ(::symlink(secret.c_str(), log.c_str()), 0);
  WorkerSpec spec = AsWorker("/bin/echo", {"appended by the worker"});
  spec.log_path = log;
  spec.working_dir = job.path();
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(),
              HasSubstr("cannot open the worker log " + log + " as uid 61001"));
  EXPECT_THAT(w.status().message(), HasSubstr("symbolic link"));
  EXPECT_EQ(ReadFile(secret), "root-only bytes\n");
  EXPECT_EQ(StatOf(secret).st_size, 16);
  EXPECT_EQ(StatOf(secret).st_uid, 0u);
  EXPECT_EQ(StatOf(secret).st_mode & 0777, 0600u);
}

TEST_F(WorkerProcessTest, RefusesASymlinkedStdoutFileWithoutTruncatingTheTarget) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switches to uid " << kWorkerUid << ")";
  ScratchDir root_only;
  const std::string secret = root_only.path() + "/shadow";
  WriteFile(secret, "root-only bytes\n", 0600);
  ScratchDir job(kWorkerUid);
  const std::string out = job.path() + "/validation.json";
  ASSERT_EQ(::symlink(secret.c_str(), out.c_str()), 0);
  WorkerSpec spec = AsWorker("/bin/echo", {"{}"});
  spec.log_path = job.path() + "/worker.log";
  spec.stdout_path = out;
  spec.working_dir = job.path();
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(),
              HasSubstr("cannot open the worker stdout file " + out + " as uid 61001"));
  EXPECT_THAT(w.status().message(), HasSubstr("symbolic link"));
  EXPECT_EQ(ReadFile(secret), "root-only bytes\n");
  EXPECT_EQ(StatOf(secret).st_size, 16);
}

// O_NOFOLLOW also guards a daemon that does not switch ids.
TEST_F(WorkerProcessTest, RefusesASymlinkedLogWithoutAUidSwitch) {
  const std::string target = LogPath() + ".target";
  WriteFile(target, "kept\n", 0600);
  const std::string log = LogPath();
  std::filesystem::remove(log);
  ASSERT_EQ(::symlink(target.c_str(), log.c_str()), 0);
  WorkerSpec spec;
  spec.program = "/bin/echo";
  spec.args = {"appended"};
  spec.log_path = log;
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(), HasSubstr("cannot open the worker log " + log + " as uid " +
                                              std::to_string(::geteuid())));
  EXPECT_THAT(w.status().message(),
              HasSubstr("Too many levels of symbolic links (a symbolic link is refused)"));
  EXPECT_EQ(ReadFile(target), "kept\n");
}

// Unblocks a writer's open of `fifo` by opening it for reading if `done` is
// not set within 10 s, so a regression fails the test instead of hanging it.
class FifoWatchdog {
 public:
  explicit FifoWatchdog(const std::string& fifo)
      : thread_([this, fifo] {
          for (int i = 0; i < 1000 && !done_; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          if (!done_) fd_ = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
        }) {}
  ~FifoWatchdog() {
    done_ = true;
    thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  std::atomic<bool> done_{false};
  int fd_ = -1;
  std::thread thread_;
};

TEST_F(WorkerProcessTest, RefusesAFifoAsTheLogWithoutAReaderPromptly) {
  const std::string log = LogPath();
  std::filesystem::remove(log);
  ASSERT_EQ(::mkfifo(log.c_str(), 0600), 0);
  WorkerSpec spec;
  spec.program = "/bin/echo";
  spec.log_path = log;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<WorkerProcess>> w = absl::UnknownError("not started");
  {
    FifoWatchdog watchdog(log);
    w = WorkerProcess::Start(spec);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5))
      << "blocked on the FIFO";
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(), HasSubstr("cannot open the worker log " + log));
  EXPECT_THAT(w.status().message(), HasSubstr("a FIFO or socket is refused"));
}

TEST_F(WorkerProcessTest, RefusesAFifoAsTheLogWithAReader) {
  const std::string log = LogPath();
  std::filesystem::remove(log);
  ASSERT_EQ(::mkfifo(log.c_str(), 0600), 0);
  const int reader = ::open(log.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  WorkerSpec spec;
  spec.program = "/bin/echo";
  spec.args = {"into the fifo"};
  spec.log_path = log;
  auto w = WorkerProcess::Start(spec);
  char buf[64];
  EXPECT_LE(::read(reader, buf, sizeof(buf)), 0) << "the worker wrote into the FIFO";
  ::close(reader);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(), HasSubstr("cannot open the worker log " + log));
  EXPECT_THAT(w.status().message(), HasSubstr("it is a FIFO, not a regular file"));
}

TEST_F(WorkerProcessTest, CreatesTheWorkersFilesAsTheWorkersUidInItsWorkingDirectory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switches to uid " << kWorkerUid << ")";
  ScratchDir job(kWorkerUid);
  WorkerSpec spec = AsWorker("/bin/sh", {"-c", "pwd; id -u; echo warning >&2"});
  spec.env = {{"PATH", "/usr/bin:/bin"}};
  spec.log_path = job.path() + "/worker.log";
  spec.stdout_path = job.path() + "/validation.json";
  spec.working_dir = job.path();
  auto w = WorkerProcess::Start(spec);
  ASSERT_TRUE(w.ok()) << w.status();
  auto e = (*w)->Wait(10000);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->exit_code, 0);
  EXPECT_EQ(ReadFile(spec.stdout_path), job.path() + "\n61001\n");
  EXPECT_EQ(ReadFile(spec.log_path), "warning\n");
  const mode_t umask = ::umask(0);
  ::umask(umask);
  for (const std::string& f : {spec.log_path, spec.stdout_path}) {
    const struct stat st = StatOf(f);
    EXPECT_EQ(st.st_uid, kWorkerUid) << f;
    EXPECT_EQ(st.st_gid, kWorkerGid) << f;
    EXPECT_EQ(st.st_mode & 0777, 0640u & ~umask) << f;
  }
}

TEST_F(WorkerProcessTest, RefusesALogTheWorkerCannotWrite) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switches to uid " << kWorkerUid << ")";
  ScratchDir job(kWorkerUid);
  const std::string log = job.path() + "/worker.log";
  WriteFile(log, "root's\n", 0600);  // a regular file, root's, not a link
  WorkerSpec spec = AsWorker("/bin/echo", {"appended"});
  spec.log_path = log;
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().code(),
              AnyOf(absl::StatusCode::kFailedPrecondition, absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(w.status().message(),
              HasSubstr("cannot open the worker log " + log + " as uid 61001: Permission denied"));
  EXPECT_EQ(ReadFile(log), "root's\n");
}

TEST_F(WorkerProcessTest, RefusesAWorkingDirectoryTheWorkerCannotEnter) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switches to uid " << kWorkerUid << ")";
  ScratchDir closed(std::nullopt, 0700);  // root's
  WorkerSpec spec = AsWorker("/bin/true", {});
  spec.working_dir = closed.path();
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(), HasSubstr("cannot enter working directory " + closed.path() +
                                              " as uid 61001: Permission denied"));
}

TEST_F(WorkerProcessTest, ReportsAMissingWorkingDirectory) {
  WorkerSpec spec;
  spec.program = "/bin/true";
  spec.working_dir = "/nonexistent/job";
  spec.log_path = LogPath();
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(),
              HasSubstr("cannot enter working directory /nonexistent/job as uid " +
                        std::to_string(::geteuid()) + ": No such file or directory"));
  // The directory is entered before the log is opened.
  EXPECT_FALSE(std::filesystem::exists(spec.log_path));
}

// A program that passes access(X_OK) but cannot be exec'd: an error from
// Start, not a bare exit code 127.
TEST_F(WorkerProcessTest, ReportsAFailedExec) {
  const std::string program = LogPath() + ".prog";
  WriteFile(program, "#!/nonexistent/interpreter\n", 0755);
  WorkerSpec spec;
  spec.program = program;
  auto w = WorkerProcess::Start(spec);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(w.status().message(),
              HasSubstr("cannot execute the worker program " + program + " as uid " +
                        std::to_string(::geteuid()) + ": No such file or directory"));
}

// Without root, taking other ids fails; Start names the step.
TEST_F(WorkerProcessTest, NamesTheCredentialStepThatFailed) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may take any ids";
  WorkerSpec spec;
  spec.program = "/bin/true";
  spec.uid = ::geteuid() + 1;
  auto w = WorkerProcess::Start(spec);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInternal) << w.status();
  EXPECT_THAT(w.status().message(),
              HasSubstr("setuid to uid " + std::to_string(::geteuid() + 1) + " failed"));
  spec.gid = ::getegid() + 1;
  w = WorkerProcess::Start(spec);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInternal) << w.status();
  EXPECT_THAT(w.status().message(), HasSubstr("setgroups"));
}

}  // namespace
}  // namespace fjord::daemon
