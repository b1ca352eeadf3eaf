// A job's worker process: fork/exec of the trainer (fjord-train) in its own
// process group, never through a shell, with its GPUs pinned through
// CUDA_VISIBLE_DEVICES and its output appended to a log file.
//
// RAII: destroying a WorkerProcess that is still running SIGKILLs its whole
// process group and reaps it, so no worker outlives the object that owns it.
// Not thread-safe: one owner (the daemon's server loop) drives it.
#ifndef FJORD_DAEMON_WORKER_WORKER_PROCESS_H_
#define FJORD_DAEMON_WORKER_WORKER_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fjord::daemon {

struct WorkerSpec {
  std::string program;                     // absolute path of the executable
  std::vector<std::string> args;           // argv[1..], passed as they are (no shell)
  std::map<std::string, std::string> env;  // the whole environment of the child
  std::string cuda_visible_devices;        // set as CUDA_VISIBLE_DEVICES ("" = none visible)
  std::string log_path;                    // stdout+stderr appended here; "" = /dev/null
  std::string stdout_path;                 // if set: stdout truncated into this file instead
  std::string working_dir;                 // "" = inherit
  // When the daemon runs as root: the unprivileged user the worker runs as
  // (setgid/setuid before exec). Unset: same user as the daemon.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  // The worker gets SIGKILL when the thread that started it dies (the daemon
  // crashing or being killed -9), so no orphan keeps training, or writing
  // checkpoints, beside the worker a restarted daemon launches.
  bool die_with_parent = true;
  // prctl(PR_SET_NO_NEW_PRIVS) before exec: neither the worker nor anything
  // it runs can gain privileges through setuid/setgid bits or file
  // capabilities. Survives exec and fork.
  bool no_new_privs = true;
};

struct WorkerExit {
  int exit_code = -1;  // when exited normally
  int signal = 0;      // when killed by a signal
  bool normal() const { return signal == 0; }
  // "exit code 2" / "killed by signal 9 (Killed)".
  std::string Describe() const;
};

class WorkerProcess {
 public:
  // Starts the worker. FailedPrecondition when the program is not executable,
  // Internal when fork fails; a failing exec shows as exit code 127.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(const WorkerSpec& spec);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The exit once the process has ended (non-blocking; reaps it).
  std::optional<WorkerExit> Poll();
  // Blocks until the process ends or `timeout_ms` passes (then nullopt).
  std::optional<WorkerExit> Wait(int timeout_ms);
  // SIGTERM / SIGKILL to the whole process group.
  void Terminate();
  void Kill();

 private:
  explicit WorkerProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  std::optional<WorkerExit> exit_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_WORKER_WORKER_PROCESS_H_
