// Slurm as fjordd's executor, the pure half: what fjordd asks of Slurm
// (sbatch's options and batch script for a job) and what Slurm's answers
// mean (squeue's lines, a job's state and exit code, in fjord's terms). No
// I/O: slurm_workers.h runs the commands. Tested with tables in
// slurm_test.cc and against a real Slurm in tests/slurm.
#ifndef FJORD_DAEMON_SLURM_SLURM_H_
#define FJORD_DAEMON_SLURM_SLURM_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/worker/worker_process.h"

namespace fjord::daemon {

// executor.slurm in fjordd.yaml (configs/fjordd.yaml documents each field).
struct SlurmConfig {
  std::string partition;                 // sbatch --partition ("": Slurm's default)
  std::string account;                   // --account
  std::string qos;                       // --qos
  std::string time_limit;                // --time ("": the partition's)
  int gpus_per_node = 0;                 // 0: a CPU cluster (ranks_per_node ranks per node)
  int ranks_per_node = 1;                // CPU cluster only
  int cpus_per_task = 0;                 // --cpus-per-task (0: Slurm's default)
  std::vector<std::string> sbatch_args;  // more sbatch options the operator allows
  std::string bin_dir = "/usr/bin";      // where sbatch, squeue, scancel are
  std::string slurm_conf;                // SLURM_CONF for those commands ("": Slurm's default)
  std::string report_listen;             // tcp://ADDR:PORT the report socket binds (required)
  std::string report_endpoint;           // what the ranks connect to ("": report_listen)
  int64_t poll_interval_ms = 2000;       // squeue every this often
  int64_t signal_before_limit_s = 120;   // --signal=TERM@N: checkpoint before the time limit
  int max_jobs = 256;                    // Slurm jobs fjordd has submitted at once
  int64_t command_timeout_ms = 30000;    // one sbatch/squeue/scancel
};

// How a job of `ranks` data-parallel ranks is laid out: as few nodes as
// hold them (gpus_per_node ranks per GPU node, ranks_per_node per CPU
// node), the same number on each. InvalidArgument (param "gpus") when
// `ranks` does not divide into whole nodes.
struct SlurmShape {
  int nodes = 1;
  int tasks_per_node = 1;
  int gpus_per_node = 0;
};
absl::StatusOr<SlurmShape> ShapeFor(int ranks, const SlurmConfig& config);

// The job's name in Slurm: "fjord-<job id>".
std::string SlurmJobName(const std::string& job_id);

// sbatch's arguments for a job (the batch script comes on stdin): name,
// shape, partition/account/QOS/time limit, the worker's uid/gid, working
// directory and log (append), requeue on node failure, SIGTERM to the ranks
// signal_before_limit_s before the time limit, --parsable, then the
// operator's sbatch_args. `test_only`: --test-only (would it be accepted?).
std::vector<std::string> SbatchArgs(const SlurmConfig& config, const SlurmShape& shape,
                                    const std::string& job_id, const WorkerSpec& spec,
                                    bool test_only);

// The batch script: the worker's whole environment set explicitly (nothing
// of fjordd's or the submitting host's leaks in), then `exec srun` of the
// worker's program and arguments, every word single-quoted. srun's exit
// status (the highest of the ranks') is the job's.
std::string BatchScript(const WorkerSpec& spec);

// One word for bash, single-quoted ('it'\''s').
std::string ShellQuote(absl::string_view word);

// What Slurm says of one job.
struct SlurmJobInfo {
  std::string id;
  std::string state;   // PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
  std::string reason;  // why it pends, or "None"
  std::string nodes;   // its node list ("" while pending)
  int exit_code = 0;   // ExitCode=CODE:SIGNAL
  int signal = 0;
};

// The squeue arguments whose output ParseSqueue reads: every job Slurm
// still knows (MinJobAge keeps ended ones a while), one line each.
std::vector<std::string> SqueueArgs();
// squeue's lines "ID|STATE|REASON|NODES" (no exit code: squeue's format
// has none); blank lines skipped. InvalidArgument naming the line for one
// that does not parse.
absl::StatusOr<std::map<std::string, SlurmJobInfo>> ParseSqueue(absl::string_view out);

// `scontrol show job -o ID`: one line of KEY=VALUE words; JobId, JobState,
// Reason, NodeList and ExitCode=CODE:SIGNAL are read. InvalidArgument when
// JobId or JobState is missing.
std::vector<std::string> ScontrolShowJobArgs(const std::string& slurm_id);
absl::StatusOr<SlurmJobInfo> ParseScontrolJob(absl::string_view out);

enum class SlurmPhase {
  kPending,  // PENDING, REQUEUED, REQUEUE_HOLD, CONFIGURING, RESV_DEL_HOLD, SUSPENDED...
  kRunning,  // RUNNING, COMPLETING (its ranks may still report)
  kEnded,    // COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, PREEMPTED, OUT_OF_MEMORY...
};
SlurmPhase PhaseOf(absl::string_view state);

// How an ended Slurm job ended, in the terms of a worker's end
// (daemon/worker/exit_policy.h). `cause`: a sentence naming the Slurm job
// and its state when Slurm, not the trainer, ended it ("" for a plain
// exit). `final`: retrying cannot help (cancelled outside fjord, the time
// limit or a deadline reached), so the job fails instead of resuming.
// `stop_requested`: fjordd itself scancelled it.
struct SlurmEnd {
  WorkerExit exit;
  std::string cause;
  bool final = false;
};
SlurmEnd EndOf(const SlurmJobInfo& info, bool stop_requested);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SLURM_SLURM_H_
