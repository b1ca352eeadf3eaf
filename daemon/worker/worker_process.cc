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
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace fjord::daemon {

std::string WorkerExit::Describe() const {
  if (signal != 0) return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
  return absl::StrCat("exit code ", exit_code);
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(const WorkerSpec& spec) {
  if (spec.program.empty() || spec.program[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("worker program must be an absolute path, got '", spec.program, "'"));
  }
  if (::access(spec.program.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker program ", spec.program, " is not executable: ", std::strerror(errno)));
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
  const std::string log = spec.log_path.empty() ? "/dev/null" : spec.log_path;
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("cannot open worker log ", log, ": ", std::strerror(errno)));
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int out_fd = -1;
  if (!spec.stdout_path.empty()) {
    out_fd = ::open(spec.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out_fd < 0) {
      const int e = errno;
      ::close(log_fd);
      if (null_fd >= 0) ::close(null_fd);
      return absl::InternalError(absl::StrCat("cannot open worker stdout ", spec.stdout_path, ": ", std::strerror(e)));
    }
  }
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    if (out_fd >= 0) ::close(out_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // own process group: signals reach the worker and its children
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd >= 0 ? out_fd : log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    // Reset signal dispositions the daemon may have changed.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD}) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!spec.working_dir.empty() && ::chdir(spec.working_dir.c_str()) != 0) ::_exit(126);
    if (spec.gid && (::setgroups(0, nullptr) != 0 || ::setgid(*spec.gid) != 0)) ::_exit(126);
    if (spec.uid && ::setuid(*spec.uid) != 0) ::_exit(126);
    // After setuid (a credential change clears the parent-death signal).
    if (spec.die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(126);
    }
    if (spec.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, so there is no race with Terminate
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  if (out_fd >= 0) ::close(out_fd);
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(pid));
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
