#include "daemon/worker/worker_process.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fjord::daemon {

std::string WorkerExit::Describe() const {
  if (signal != 0) return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
  return absl::StrCat("exit code ", exit_code);
}

namespace {

// What the child was doing when it gave up before (or at) exec.
enum class ChildStage : int32_t {
  kSetgroups = 1,
  kSetgid,
  kSetuid,
  kDeathSignal,
  kParentGone,
  kWorkingDir,
  kOpenLog,
  kLogNotRegular,
  kOpenStdout,
  kStdoutNotRegular,
  kRedirect,
  kNoNewPrivs,
  kExec,
};

// The fixed-size record a child writes to the error pipe before it exits
// (well under PIPE_BUF, so the write is atomic).
struct ChildFailure {
  ChildStage stage;
  int32_t error;  // errno, 0 for the file-type checks
  uint32_t mode;  // st_mode for the file-type checks
};

std::string FileType(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFIFO:
      return "a FIFO";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFDIR:
      return "a directory";
    case S_IFSOCK:
      return "a socket";
    default:
      return absl::StrFormat("a file of type 0%o", mode & S_IFMT);
  }
}

// strerror plus what the flags the files are opened with make of it.
std::string OpenError(int error) {
  std::string s = std::strerror(error);
  if (error == ELOOP) absl::StrAppend(&s, " (a symbolic link is refused)");
  if (error == ENXIO)
    absl::StrAppend(&s, " (a FIFO or socket is refused: only a regular file is accepted)");
  return s;
}

// The error Start returns for the child's report.
absl::Status FailureStatus(const ChildFailure& f, const WorkerSpec& spec, uid_t uid) {
  const std::string as = absl::StrCat(" as uid ", uid);
  const char* err = std::strerror(f.error);
  auto internal = [&](const std::string& step) {
    return absl::InternalError(absl::StrCat("worker ", spec.program, ": ", step, " failed: ", err));
  };
  auto cannot_open = [&](const char* what, const std::string& path, const std::string& why) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the worker ", what, " ", path, as, ": ", why));
  };
  switch (f.stage) {
    case ChildStage::kSetgroups:
      return internal("setgroups (dropping supplementary groups)");
    case ChildStage::kSetgid:
      return internal(absl::StrCat("setgid to gid ", spec.gid.value_or(0)));
    case ChildStage::kSetuid:
      return internal(absl::StrCat("setuid to uid ", uid));
    case ChildStage::kDeathSignal:
      return internal("prctl(PR_SET_PDEATHSIG)");
    case ChildStage::kParentGone:
      return absl::InternalError(
          absl::StrCat("worker ", spec.program,
                       ": the daemon thread that started it exited before it could exec"));
    case ChildStage::kWorkingDir:
      return absl::FailedPreconditionError(
          absl::StrCat("cannot enter working directory ", spec.working_dir, as, ": ", err));
    case ChildStage::kOpenLog:
      return cannot_open("log", spec.log_path, OpenError(f.error));
    case ChildStage::kLogNotRegular:
      return cannot_open("log", spec.log_path,
                         absl::StrCat("it is ", FileType(f.mode), ", not a regular file"));
    case ChildStage::kOpenStdout:
      return cannot_open("stdout file", spec.stdout_path, OpenError(f.error));
    case ChildStage::kStdoutNotRegular:
      return cannot_open("stdout file", spec.stdout_path,
                         absl::StrCat("it is ", FileType(f.mode), ", not a regular file"));
    case ChildStage::kRedirect:
      return internal("redirecting its stdin/stdout/stderr");
    case ChildStage::kNoNewPrivs:
      return internal("prctl(PR_SET_NO_NEW_PRIVS)");
    case ChildStage::kExec:
      return absl::FailedPreconditionError(
          absl::StrCat("cannot execute the worker program ", spec.program, as, ": ", err));
  }
  return internal(absl::StrCat("unknown start-up step ", static_cast<int32_t>(f.stage)));
}

// In the child: writes the record and exits (async-signal-safe). 126 for a
// failure before exec, 127 for exec itself (a shell's conventions).
[[noreturn]] void ReportAndExit(int report_fd, ChildStage stage, int error, mode_t mode,
                                int code = 126) {
  const ChildFailure f{stage, error, static_cast<uint32_t>(mode)};
  (void)!::write(report_fd, &f, sizeof(f));
  ::_exit(code);
}

void CloseIfOpen(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(const WorkerSpec& spec) {
  if (spec.program.empty() || spec.program[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("worker program must be an absolute path, got '", spec.program, "'"));
  }
  if (::access(spec.program.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker program ", spec.program, " is not executable: ", std::strerror(errno)));
  }
  // Everything the child needs is prepared before fork: after fork only
  // async-signal-safe calls are made.
  std::vector<std::string> argv_s = {spec.program};
  argv_s.insert(argv_s.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> env_s;
  for (const auto& [k, v] : spec.env) {
    if (k != "CUDA_VISIBLE_DEVICES") env_s.push_back(k + "=" + v);
  }
  env_s.push_back("CUDA_VISIBLE_DEVICES=" + spec.cuda_visible_devices);
  std::vector<char*> argv, envp;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  // Only /dev/null is opened here, by the daemon: the worker's own files are
  // opened by the child once it is the worker (below).
  const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int null_out = spec.log_path.empty() ? ::open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
  if (null_in < 0 || (spec.log_path.empty() && null_out < 0)) {
    const int e = errno;
    CloseIfOpen(null_in);
    CloseIfOpen(null_out);
    return absl::InternalError(absl::StrCat("cannot open /dev/null: ", std::strerror(e)));
  }
  // The child reports a failure before exec here; a successful exec closes
  // the write end (O_CLOEXEC) and the parent reads EOF.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    const int e = errno;
    CloseIfOpen(null_in);
    CloseIfOpen(null_out);
    return absl::InternalError(
        absl::StrCat("pipe2 for the worker's start-up report: ", std::strerror(e)));
  }
  const uid_t worker_uid = spec.uid.value_or(::geteuid());
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    CloseIfOpen(null_in);
    CloseIfOpen(null_out);
    ::close(report[0]);
    ::close(report[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    auto fail = [&](ChildStage stage, int error, mode_t mode = 0) {
      ReportAndExit(report[1], stage, error, mode);
    };
    ::close(report[0]);
    ::setpgid(0, 0);  // own process group: signals reach the worker and its children
    // Reset signal dispositions the daemon may have changed.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD}) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // The ids first: everything below that touches the worker's files (its
    // directory, its log) is then checked by the kernel as the worker, never
    // as the daemon (root).
    if (spec.gid) {
      if (::setgroups(0, nullptr) != 0) fail(ChildStage::kSetgroups, errno);
      if (::setgid(*spec.gid) != 0) fail(ChildStage::kSetgid, errno);
    }
    if (spec.uid && ::setuid(*spec.uid) != 0) fail(ChildStage::kSetuid, errno);
    // After setuid (a credential change clears the parent-death signal).
    if (spec.die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(ChildStage::kDeathSignal, errno);
      if (::getppid() != parent) fail(ChildStage::kParentGone, 0);
    }
    if (!spec.working_dir.empty() && ::chdir(spec.working_dir.c_str()) != 0)
      fail(ChildStage::kWorkingDir, errno);
    // O_NOFOLLOW: a symbolic link put in the file's place is refused, not
    // followed. O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of
    // blocking; with one, fstat refuses it like any other non-regular file.
    auto open_regular = [&](const std::string& path, int flags, ChildStage open_stage,
                            ChildStage type_stage) {
      const int fd = ::open(path.c_str(),
                            flags | O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0640);
      if (fd < 0) fail(open_stage, errno);
      struct stat st {};
      if (::fstat(fd, &st) != 0) fail(open_stage, errno);
      if (!S_ISREG(st.st_mode)) fail(type_stage, 0, st.st_mode);
      const int fl = ::fcntl(fd, F_GETFL);
      if (fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) fail(ChildStage::kRedirect, errno);
      return fd;
    };
    const int log_fd = spec.log_path.empty()
                           ? null_out
                           : open_regular(spec.log_path, O_APPEND, ChildStage::kOpenLog,
                                          ChildStage::kLogNotRegular);
    const int out_fd = spec.stdout_path.empty()
                           ? log_fd
                           : open_regular(spec.stdout_path, O_TRUNC, ChildStage::kOpenStdout,
                                          ChildStage::kStdoutNotRegular);
    if (::dup2(null_in, STDIN_FILENO) < 0 || ::dup2(out_fd, STDOUT_FILENO) < 0 ||
        ::dup2(log_fd, STDERR_FILENO) < 0) {
      fail(ChildStage::kRedirect, errno);
    }
    if (spec.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
      fail(ChildStage::kNoNewPrivs, errno);
    ::execve(argv[0], argv.data(), envp.data());
    ReportAndExit(report[1], ChildStage::kExec, errno, 0, 127);
  }
  ::setpgid(pid, pid);  // also from the parent, so there is no race with Terminate
  ::close(report[1]);
  CloseIfOpen(null_in);
  CloseIfOpen(null_out);
  // Blocks only until the child execs (EOF) or reports why it could not.
  ChildFailure failure{};
  size_t got = 0;
  ssize_t n = 0;
  while (got < sizeof(failure)) {
    n = ::read(report[0], reinterpret_cast<char*>(&failure) + got, sizeof(failure) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  const int read_error = errno;
  ::close(report[0]);
  // EOF: the program runs.
  if (n == 0 && got == 0) return std::unique_ptr<WorkerProcess>(new WorkerProcess(pid));
  // A report (the child exits right after writing it), or no telling what the
  // child is doing: it goes, and is reaped here, so no error leaves a process
  // (or a zombie) behind.
  if (n < 0) ::kill(-pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (n < 0) {
    return absl::InternalError(absl::StrCat(
        "worker ", spec.program, ": reading its start-up report: ", std::strerror(read_error)));
  }
  if (got != sizeof(failure)) {
    return absl::InternalError(
        absl::StrCat("worker ", spec.program, ": truncated start-up report (", got, " bytes)"));
  }
  return FailureStatus(failure, spec, worker_uid);
}

WorkerProcess::~WorkerProcess() {
  if (!exit_) {
    Kill();
    Wait(5000);
  }
}

std::optional<WorkerExit> WorkerProcess::Poll() {
  if (exit_) return exit_;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r != pid_) return std::nullopt;
  WorkerExit e;
  if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
  exit_ = e;
  // Children the worker left behind in its group go with it.
  ::kill(-pid_, SIGKILL);
  return exit_;
}

std::optional<WorkerExit> WorkerProcess::Wait(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (auto e = Poll()) return e;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void WorkerProcess::Terminate() {
  if (!exit_) ::kill(-pid_, SIGTERM);
}

void WorkerProcess::Kill() {
  if (!exit_) ::kill(-pid_, SIGKILL);
}

}  // namespace fjord::daemon
