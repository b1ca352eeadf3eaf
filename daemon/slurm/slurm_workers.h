// SlurmWorkers: fjordd's trainers as Slurm batch jobs (executor: slurm).
//
// Launch submits one batch job per fjord job (sbatch, the script on stdin:
// nothing of it is written where a worker could change it), `srun` starting
// its ranks on as many nodes as they need (slurm.h). fjordd's own job record
// stays the customers' source of truth; Slurm's view comes from squeue, run
// every poll_interval_ms on a thread of its own (a slow or unreachable
// slurmctld never stalls the daemon's loop), and reaches the loop as
// WorkerUpdates: kPending (why it waits), kStarted (its nodes), kExited
// (how it ended, read with scontrol: its exit code, or what Slurm did to it).
//
// Ranks on other nodes report over the network: one PULL socket bound at
// report_listen, CURVE with a server key kept in the state directory
// (report.key, made at the first start). Each job's rank 0 authenticates
// with a key pair of its own, derived from that server key and the job id
// (HMAC-SHA-256), handed to it in its private job directory (report.keys,
// ReportKeysFor) and never on a command line; the ZAP handler (on the
// loop, in this object's own ZeroMQ context) admits exactly the keys of
// the jobs being tracked and names the job as the connection's User-Id, so
// one job can never speak for another. Since the keys are derived and the
// port fixed, a restarted fjordd (Adopt) hears its running jobs again:
// their ranks' PUSH sockets reconnect by themselves.
//
// Stop: `scancel --signal=TERM` (every rank checkpoints and exits 75), then
// scancel after stop_grace_ms. Kill: scancel. A job whose rank 0 stays
// silent for heartbeat_timeout_ms while Slurm runs it is scancelled
// (kHeartbeatTimeout).
//
// Not thread-safe: the server loop drives it (the squeue thread only hands
// over snapshots).
#ifndef FJORD_DAEMON_SLURM_SLURM_WORKERS_H_
#define FJORD_DAEMON_SLURM_SLURM_WORKERS_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/slurm/command.h"
#include "daemon/slurm/slurm.h"
#include "daemon/worker/workers.h"

namespace fjord::daemon {

struct SlurmWorkersOptions {
  SlurmConfig slurm;
  std::string state_dir;  // report.key / report.pub live here
  int64_t heartbeat_timeout_ms = 30000;
  int64_t stop_grace_ms = 60000;
  std::function<int64_t()> now_ms;  // default: steady clock
  // The commands, for tests: default RunCommand.
  std::function<absl::StatusOr<CommandResult>(const std::vector<std::string>& argv,
                                              const std::string& stdin_data)>
      run;
};

class SlurmWorkers : public Workers {
 public:
  // Loads (or makes) the report key, binds the report socket and starts the
  // squeue thread. Unavailable when report_listen cannot be bound.
  static absl::StatusOr<std::unique_ptr<SlurmWorkers>> Start(SlurmWorkersOptions options);
  ~SlurmWorkers() override;  // stops the thread; Slurm's jobs keep running

  std::string EndpointFor(const std::string& job_id) const override;
  // sbatch. Only LaunchOptions::cluster launches come here. FailedPrecondition
  // with sbatch's own words when Slurm refuses the job; Unavailable when
  // sbatch cannot reach slurmctld.
  absl::Status Launch(const std::string& job_id, const WorkerSpec& spec,
                      const LaunchOptions& launch = {}) override;
  void Stop(const std::string& job_id) override;
  void Kill(const std::string& job_id) override;
  bool Running(const std::string& job_id) const override { return jobs_.count(job_id) > 0; }
  size_t size() const override { return jobs_.size(); }
  std::string ClusterJobId(const std::string& job_id) const override;
  std::optional<std::string> ReportKeysFor(const std::string& job_id) const override;
  // sbatch --test-only with the job's shape.
  absl::Status CheckFits(const std::string& job_id, const WorkerSpec& spec, int ranks) override;

  // After a restart: the job's worker is Slurm job `slurm_id`, submitted
  // by an earlier fjordd (`running`: the job was running then); its next
  // squeue line says what became of it.
  void Adopt(const std::string& job_id, const std::string& slurm_id, bool running);

  // The report socket, the ZAP socket and the squeue thread's wake-up pipe.
  void AddPollItems(std::vector<zmq::pollitem_t>* items) const;
  // Answers ZAP requests, drains reports, and turns the newest squeue
  // snapshot into updates. Never blocks.
  std::vector<WorkerUpdate> Collect();

  // The public key a job's rank 0 reports with (tests, logs).
  std::string JobPublicKey(const std::string& job_id) const;

 private:
  struct Tracked {
    std::string slurm_id;
    std::string phase_seen;  // "", "pending:<reason>", "running:<nodes>"
    bool stop_requested = false;
    std::optional<int64_t> stop_deadline_ms;
    std::optional<int64_t> running_since_ms;
    int64_t last_heard_ms = 0;
    int misses = 0;  // squeue snapshots without it
    uint64_t submitted_generation = 0;
  };
  struct Snapshot {
    uint64_t generation = 0;
    std::map<std::string, SlurmJobInfo> jobs;  // by Slurm id
    std::set<std::string> unknown;             // asked of scontrol: Slurm knows them no more
    std::string error;                         // squeue failed
  };

  SlurmWorkers(SlurmWorkersOptions options);
  absl::Status Init();
  int64_t Now() const;
  std::map<std::string, std::string> CommandEnv() const;
  absl::StatusOr<CommandResult> Run(const std::string& program,
                                    const std::vector<std::string>& args,
                                    const std::string& stdin_data = "") const;
  void Scancel(const std::string& job_id, Tracked& t, bool term);
  void PollThread();
  void AnswerZap();
  std::string JobSecretKey(const std::string& job_id) const;

  SlurmWorkersOptions options_;
  std::string server_public_;
  std::string server_secret_;
  std::string raw_secret_;  // 32 bytes: the HMAC key for the jobs' keys
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> zap_;
  std::unique_ptr<zmq::socket_t> report_;
  std::map<std::string, Tracked> jobs_;                   // by fjord job id
  std::map<std::string, std::string> job_by_public_key_;  // Z85 -> fjord job id
  uint64_t applied_generation_ = 0;

  // Shared with the squeue thread.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
  bool poll_now_ = false;
  std::set<std::string> watch_;  // Slurm ids the thread looks after
  Snapshot snapshot_;
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
  int64_t last_error_log_ms_ = -1;
  int64_t last_refusal_log_ms_ = -1;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SLURM_SLURM_WORKERS_H_
