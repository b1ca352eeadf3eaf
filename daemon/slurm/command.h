// RunCommand: one program run to its end (fork/execve, never a shell),
// with what it reads on stdin given and what it writes to stdout and stderr
// captured, bounded in time and in output. fjordd's Slurm executor runs the
// Slurm client commands (sbatch, squeue, scancel, scontrol) through it.
#ifndef FJORD_DAEMON_SLURM_COMMAND_H_
#define FJORD_DAEMON_SLURM_COMMAND_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fjord::daemon {

struct CommandResult {
  int exit_code = -1;  // when it exited
  int signal = 0;      // when it was killed
  std::string out;     // stdout, at most max_output bytes (the rest is read and dropped)
  std::string err;     // stderr, likewise
  bool timed_out = false;
  bool ok() const { return signal == 0 && exit_code == 0 && !timed_out; }
  // "sbatch exited 1: <the first line of stderr>" and the like.
  std::string Describe(const std::string& name) const;
};

// argv[0] must be an absolute path. `env` is the child's whole environment.
// The child runs in a process group of its own; past `timeout_ms` the group
// is killed (SIGKILL) and reaped, and timed_out is set. Errors: only when
// the program cannot be started (InvalidArgument for a relative path,
// FailedPrecondition when it is not executable, Internal for pipe/fork).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::map<std::string, std::string>& env,
                                         const std::string& stdin_data, int64_t timeout_ms,
                                         size_t max_output = size_t{4} << 20);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SLURM_COMMAND_H_
