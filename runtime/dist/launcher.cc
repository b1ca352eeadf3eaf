#include "runtime/dist/launcher.h"

#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "runtime/util/net.h"

extern char** environ;

namespace fjord::dist {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_signal{0};

void OnSignal(int sig) { g_signal.store(sig); }

std::string Describe(int rank, int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::StrCat("rank ", rank, " was killed by signal ", sig, " (", strsignal(sig), ")");
  }
  return absl::StrCat("rank ", rank, " exited with code ", WEXITSTATUS(status));
}

int CodeOf(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace

int LaunchLocalRanks(const std::vector<std::string>& argv, const LaunchOptions& options) {
  auto say = options.say ? options.say : [](const std::string& m) {
    std::fprintf(stderr, "fjord-train: %s\n", m.c_str());
  };
  if (argv.empty() || options.nproc < 1) {
    say("nothing to launch");
    return 2;
  }
  const int port = FreeLoopbackPort();
  if (port == 0) {
    say("no free TCP port on 127.0.0.1 for the ranks' rendezvous");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_term {
  }, old_int{};
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGINT, &sa, &old_int);

  const int n = options.nproc;
  std::vector<pid_t> pids(n, -1);
  std::vector<int> status(n, -1);  // raw wait status once reaped
  int running = 0;
  int failed_rank = -1;
  auto signal_all = [&](int sig) {
    for (int r = 0; r < n; ++r) {
      if (pids[r] > 0 && status[r] == -1) ::kill(pids[r], sig);
    }
  };

  for (int r = 0; r < n; ++r) {
    const std::map<std::string, std::string> vars = {
        {"RANK", std::to_string(r)},
        {"WORLD_SIZE", std::to_string(n)},
        {"LOCAL_RANK", std::to_string(r)},
        {"LOCAL_WORLD_SIZE", std::to_string(n)},
        {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", std::to_string(port)},
        {"GROUP_RANK", "0"},
        {"ROLE_RANK", std::to_string(r)},
        {"FJORD_LAUNCHER_PID", std::to_string(::getpid())}};
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      const std::string key = kv.substr(0, kv.find('='));
      // A launcher inside Slurm must not hand Slurm's rank variables down.
      if (vars.count(key) == 0 && key.rfind("SLURM_PROCID", 0) != 0) env.push_back(kv);
    }
    for (const auto& [k, v] : vars) env.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (std::string& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = argv;
    std::vector<char*> cargv;
    for (std::string& s : args) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    const std::string& program = options.program.empty() ? argv[0] : options.program;
    const int rc =
        posix_spawn(&pids[r], program.c_str(), nullptr, nullptr, cargv.data(), envp.data());
    if (rc != 0) {
      say(absl::StrCat("cannot start rank ", r, " (", argv[0], "): ", strerror(rc)));
      pids[r] = -1;
      failed_rank = r;
      status[r] = 2 << 8;  // as if it exited 2
      break;
    }
    ++running;
  }

  int forwarded = 0;
  Clock::time_point kill_at = Clock::time_point::max();
  if (failed_rank >= 0) {
    signal_all(SIGTERM);
    kill_at = Clock::now() + options.grace;
  }
  while (running > 0) {
    if (const int sig = g_signal.exchange(0); sig != 0 && forwarded == 0) {
      // First signal: every rank checkpoints and stops. A second one is
      // forwarded too (the trainer then stops without waiting).
      signal_all(SIGTERM);
      ++forwarded;
    } else if (sig != 0) {
      signal_all(SIGKILL);
    }
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < n; ++r) {
        if (pids[r] != pid) continue;
        status[r] = st;
        --running;
        const bool ok =
            WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == options.stop_code);
        if (!ok && failed_rank < 0) {
          failed_rank = r;
          say(absl::StrCat(Describe(r, st), "; stopping the other ", running, " rank",
                           running == 1 ? "" : "s"));
          signal_all(SIGTERM);
          kill_at = Clock::now() + options.grace;
        }
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    if (Clock::now() >= kill_at) {
      say(absl::StrCat("ranks still running ",
                       std::chrono::duration_cast<std::chrono::seconds>(options.grace).count(),
                       " s after SIGTERM: killing them"));
      signal_all(SIGKILL);
      kill_at = Clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGINT, &old_int, nullptr);

  if (failed_rank >= 0) return CodeOf(status[failed_rank]);
  bool stopped = false;
  for (int r = 0; r < n; ++r)
    stopped |= WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == options.stop_code;
  return stopped ? options.stop_code : 0;
}

}  // namespace fjord::dist
