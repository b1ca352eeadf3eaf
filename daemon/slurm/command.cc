#include "daemon/slurm/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fjord::daemon {

std::string CommandResult::Describe(const std::string& name) const {
  std::string first = err.substr(0, err.find('\n'));
  if (first.empty()) first = out.substr(0, out.find('\n'));
  if (first.size() > 500) first.resize(500);
  std::string what;
  if (timed_out)
    what = "timed out";
  else if (signal != 0)
    what = absl::StrCat("was killed by signal ", signal);
  else
    what = absl::StrCat("exited ", exit_code);
  return first.empty() ? absl::StrCat(name, " ", what) : absl::StrCat(name, " ", what, ": ", first);
}

namespace {

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::map<std::string, std::string>& env,
                                         const std::string& stdin_data, int64_t timeout_ms,
                                         size_t max_output) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("not an absolute program path: '", argv.empty() ? "" : argv[0], "'"));
  }
  if (::access(argv[0].c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", argv[0], ": ", std::strerror(errno)));
  }
  // Everything the child needs is built before fork (no allocation after).
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_words;
  for (const auto& [k, v] : env) env_words.push_back(absl::StrCat(k, "=", v));
  for (std::string& e : env_words) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    const int e = errno;
    for (int* p : {in, out, err}) {
      CloseFd(p[0]);
      CloseFd(p[1]);
    }
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(e)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    for (int* p : {in, out, err}) {
      CloseFd(p[0]);
      CloseFd(p[1]);
    }
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (::dup2(in[0], 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) ::_exit(127);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: no race with the kill below
  CloseFd(in[0]);
  CloseFd(out[1]);
  CloseFd(err[1]);
  for (int fd : {in[1], out[0], err[0]}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (stdin_data.empty()) CloseFd(in[1]);

  CommandResult r;
  size_t written = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[65536];
  while (out[0] >= 0 || err[0] >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      r.timed_out = true;
      break;
    }
    pollfd fds[3];
    int n = 0;
    int idx_in = -1, idx_out = -1, idx_err = -1;
    if (in[1] >= 0) {
      idx_in = n;
      fds[n++] = {in[1], POLLOUT, 0};
    }
    if (out[0] >= 0) {
      idx_out = n;
      fds[n++] = {out[0], POLLIN, 0};
    }
    if (err[0] >= 0) {
      idx_err = n;
      fds[n++] = {err[0], POLLIN, 0};
    }
    const int ready = ::poll(fds, n, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    if (idx_in >= 0 && fds[idx_in].revents != 0) {
      const ssize_t w = ::write(in[1], stdin_data.data() + written, stdin_data.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == stdin_data.size()) {
        CloseFd(in[1]);
      }
    }
    for (auto [idx, fd, text] : {std::tuple<int, int*, std::string*>{idx_out, &out[0], &r.out},
                                 {idx_err, &err[0], &r.err}}) {
      if (idx < 0 || fds[idx].revents == 0) continue;
      const ssize_t got = ::read(*fd, buf, sizeof(buf));
      if (got > 0) {
        const size_t keep =
            std::min(static_cast<size_t>(got), max_output - std::min(max_output, text->size()));
        text->append(buf, keep);
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        CloseFd(*fd);
      }
    }
  }
  for (int fd : {in[1], out[0], err[0]}) {
    int f = fd;
    CloseFd(f);
  }
  if (r.timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

}  // namespace fjord::daemon
