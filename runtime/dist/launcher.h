// Runs N ranks of a program on this machine, as torchrun's standalone mode
// does: a free loopback port for the rendezvous, each rank started with
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
// MASTER_PORT, and the group kept together:
//   - SIGTERM or SIGINT to the launcher is forwarded to every rank (each
//     checkpoints and exits 75: the group exits 75);
//   - when a rank fails (exits with a code other than 0 and the agreed stop
//     code, or is killed by a signal), the others get SIGTERM, and SIGKILL
//     after `grace`; the launcher says which rank failed and how, and exits
//     with that rank's code (128 + signal for a signal);
//   - every rank is reaped before it returns;
//   - each rank gets FJORD_LAUNCHER_PID: fjord-train's ranks ask the kernel
//     to kill them when that process dies (PR_SET_PDEATHSIG), so a launcher
//     killed with SIGKILL leaves no rank behind.
// Plain C++ (no LibTorch).
#ifndef FJORD_RUNTIME_DIST_LAUNCHER_H_
#define FJORD_RUNTIME_DIST_LAUNCHER_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace fjord::dist {

struct LaunchOptions {
  int nproc = 1;
  // The file to execute; empty: argv[0]. (fjord-train runs /proc/self/exe,
  // itself, with its real path as argv[0], so `ps` shows what runs.)
  std::string program;
  // Exit code a rank uses when it stopped on request (checkpoint written).
  int stop_code = 75;
  // After a rank fails, how long the others have to exit on SIGTERM.
  std::chrono::milliseconds grace{std::chrono::seconds(30)};
  // Where the launcher reports which rank failed and how ("rank 1 was
  // killed by signal 9 (Killed)"); default: stderr with a "fjord-train: " prefix.
  std::function<void(const std::string&)> say;
};

// Starts `argv` (argv[0] is the program's path) `nproc` times with the
// variables above and waits as described. Returns the group's exit code: 0
// when every rank exited 0; stop_code when every rank exited 0 or stop_code
// and at least one stop_code; otherwise the first failed rank's code (2 when
// the ranks cannot be started at all).
int LaunchLocalRanks(const std::vector<std::string>& argv, const LaunchOptions& options);

}  // namespace fjord::dist

#endif  // FJORD_RUNTIME_DIST_LAUNCHER_H_
