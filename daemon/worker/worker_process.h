// A job's worker process: fork/exec of the trainer (fjord-train) in its own
// process group, never through a shell, with its GPUs pinned through
// CUDA_VISIBLE_DEVICES and its output appended to a log file that the worker
// opens itself, as its own user.
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

// The child takes the worker's ids (uid/gid) first and only then enters
// working_dir and opens log_path and stdout_path, so the kernel checks all
// three against the worker's own permissions, never the daemon's (root): a
// worker that swapped its log for a link to a root-only file cannot get it
// written. Each file is created 0640 (less the umask) if missing, owned by
// the worker's ids; the file itself being a symbolic link is refused
// (O_NOFOLLOW), and so is anything but a regular file (a FIFO, a device). A
// relative path is relative to working_dir.
struct WorkerSpec {
  std::string program;                     // absolute path of the executable
  std::vector<std::string> args;           // argv[1..], passed as they are (no shell)
  std::map<std::string, std::string> env;  // the whole environment of the child
  std::string cuda_visible_devices;        // set as CUDA_VISIBLE_DEVICES ("" = none visible)
  std::string log_path;     // stdout+stderr appended here, opened as the worker; "" = /dev/null
  std::string stdout_path;  // if set: stdout truncated into this file instead, opened as the worker
  std::string working_dir;  // entered as the worker; "" = inherit
  // When the daemon runs as root: the unprivileged user the worker runs as
  // (setgroups(0)/setgid/setuid before anything else in the child). Unset:
  // same user as the daemon.
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
  // Starts the worker and returns once its program has been exec'd: the
  // wait lasts only as long as the child takes to switch ids and open its
  // files (see WorkerSpec). On any error no process is left behind (the
  // child, if there was one, has been reaped). Errors:
  //   InvalidArgument     program is not an absolute path.
  //   FailedPrecondition  program is not executable, or its exec fails as the
  //                       worker ("cannot execute the worker program P as uid
  //                       U: ..."); working_dir cannot be entered as the worker
  //                       ("cannot enter working directory D as uid U: ...");
  //                       log_path or stdout_path cannot be opened as the
  //                       worker, is a symbolic link, a FIFO or anything but a
  //                       regular file ("cannot open the worker log L as uid U:
  //                       ..."). Each message names the path, the uid and why.
  //   Internal            pipe or fork fails, or in the child setgroups,
  //                       setgid, setuid, prctl (PR_SET_PDEATHSIG,
  //                       PR_SET_NO_NEW_PRIVS) or the redirection fails; the
  //                       message names the step.
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
