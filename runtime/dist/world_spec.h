// Where a training process sits in a data-parallel job: its rank, the world
// size, its rank on this node, and where the ranks meet (the rendezvous),
// read from the variables a launcher sets.
//
//   torchrun-style (torchrun, fjord-train --nproc-per-node, Kubernetes):
//     RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   Slurm (srun, one task per rank):
//     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE (or
//     SLURM_TASKS_PER_NODE), the first host of SLURM_JOB_NODELIST (or
//     SLURM_NODELIST) as the rendezvous host; MASTER_ADDR and MASTER_PORT,
//     when set, win; without MASTER_PORT the port is
//     kSlurmPortBase + SLURM_JOB_ID % kSlurmPortSpan, so the ranks of one
//     Slurm job agree on it without talking.
//
// torchrun's variables win when both sets are present (torchrun under srun
// sets its own). Plain C++ (no LibTorch): fjord-train's launcher and the
// daemon can read it too.
#ifndef FJORD_RUNTIME_DIST_WORLD_SPEC_H_
#define FJORD_RUNTIME_DIST_WORLD_SPEC_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::dist {

inline constexpr int kSlurmPortBase = 29500;
inline constexpr int kSlurmPortSpan = 20000;

struct WorldSpec {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string source;  // "torchrun" or "slurm": which variables it came from

  // "rank 1 of 2 (local 1 of 2), rendezvous 127.0.0.1:29500, from torchrun's variables"
  std::string ToString() const;
};

// Returns the value of an environment variable, or nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
// The process's environment (getenv).
EnvLookup ProcessEnv();

// The world the variables describe, nullopt when none of RANK / WORLD_SIZE /
// SLURM_PROCID is set (a single process, no launcher). InvalidArgument,
// naming the variable and its value, when one is malformed or missing
// (WORLD_SIZE without RANK, a rank >= the world size, a port out of range,
// ...). A Slurm step of one task (SLURM_NTASKS=1, as a plain sbatch script
// has) is a world of one.
absl::StatusOr<std::optional<WorldSpec>> WorldSpecFromEnv(const EnvLookup& env);

// The first host of a Slurm node list: "node[03-05,09],gpu1" -> "node03",
// "gpu-a,gpu-b" -> "gpu-a", "n[1-2]x" -> "n1x". InvalidArgument for an empty
// or malformed list.
absl::StatusOr<std::string> FirstSlurmHost(absl::string_view nodelist);

// SLURM_TASKS_PER_NODE's count for the first node: "4(x2),3" -> 4, "2" -> 2.
absl::StatusOr<int> FirstSlurmTasksPerNode(absl::string_view tasks_per_node);

}  // namespace fjord::dist

#endif  // FJORD_RUNTIME_DIST_WORLD_SPEC_H_
