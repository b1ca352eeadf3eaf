// JobRunner: jobs meet their workers. It starts validators (bounded per node
// and per tenant) and the trainers the scheduler picks, turns what workers
// report into job progress, and applies what their ends mean
// (daemon/worker/exit_policy.h) through the job lifecycle.
//
// The Slurm executor's half (submission, Slurm's states) is in job_runner_cluster.cc.
//
// Not thread-safe: the server loop owns it.
#ifndef FJORD_DAEMON_SERVER_JOB_RUNNER_H_
#define FJORD_DAEMON_SERVER_JOB_RUNNER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "daemon/protocol/messages.h"
#include "daemon/protocol/worker_protocol.h"
#include "daemon/server/handlers.h"
#include "daemon/worker/supervisor.h"
#include "runtime/util/nvml.h"

namespace fjord::daemon {

class JobRunner {
 public:
  // `ctx` (its config, clock, store, storage, tenants, jobs, workers,
  // metrics) and `nvml` (may be null) are not owned and must outlive this.
  JobRunner(DaemonContext* ctx, const Nvml* nvml);

  // Starts validators for the jobs waiting for one (oldest first, at most
  // scheduler.max_validators on the node and max_validators_per_tenant per
  // tenant) and, when something changed since the last call, the trainers
  // the scheduler picks. Nothing starts while `stopping` or while the
  // storage root is unavailable (`storage_ok` false): jobs wait, they do
  // not fail.
  void Reconcile(bool stopping, bool storage_ok);

  // What the supervisor reported (WorkerSupervisor::Collect): progress
  // events, timeouts, ends. `stopping`: the daemon is shutting down (an end
  // then requeues the job instead of counting against it).
  void OnUpdates(std::vector<WorkerUpdate> updates, bool stopping);

  // Timer: the directories of jobs whose worker runs are walked again
  // (every kJobUsageRefreshMs), and a running job whose tenant is over its
  // quota is paused (SIGTERM: it checkpoints and stops; nothing trained is
  // lost); its error says why and job.resume waits for space.
  void RefreshUsage();
  void PauseIfOverQuota(const protocol::Job& job);

  // A restarted fjordd adopted the job's running Slurm job: what it
  // reports is the job's progress again.
  void Adopted(const std::string& job_id);

  // How long between RefreshUsage walks.
  static constexpr int64_t kJobUsageRefreshMs = 10000;
  // slurmctld unreachable at submission: tried again after this long.
  static constexpr int64_t kClusterRetryMs = 10000;

 private:
  struct WorkerRun {
    bool validator = false;
    std::map<int, uint64_t> energy_start_mj;
    std::optional<protocol::JobError> reported_error;
    std::string lost_reason;  // heartbeat timeout, deadline...
  };

  absl::StatusOr<WorkerSpec> BaseSpec(const protocol::Job& job);
  absl::Status JobDirPresent(const protocol::Job& job);
  void LaunchValidator(const protocol::Job& job);
  absl::StatusOr<WorkerSpec> TrainerSpec(const protocol::Job& job, const std::vector<int>& gpus);
  absl::Status LaunchTrainer(const protocol::Job& job, const std::vector<int>& gpus);
  static int RanksOf(const protocol::Job& job, const std::vector<int>& gpus);
  bool Cluster() const;
  void SubmitToCluster();
  void OnClusterPending(const std::string& job_id, const std::string& detail);
  void OnClusterStarted(const std::string& job_id, const std::string& nodes);
  void OnClusterEndWhileWaiting(const protocol::Job& job, const WorkerExit& exit,
                                const std::string& why, bool final_loss);
  void OnEvent(const std::string& job_id, const protocol::WorkerMessage& message);
  void OnValidatorEnd(const protocol::Job& job, const WorkerExit& exit, const WorkerRun& run,
                      bool stopping);
  void OnTrainerEnd(protocol::Job job, const WorkerExit& exit, const WorkerRun& run, bool stopping,
                    bool final_loss = false);
  void AddEnergy(protocol::Job& job, const WorkerRun& run);

  DaemonContext* ctx_;
  const Nvml* nvml_;
  std::map<std::string, WorkerRun> runs_;  // by job id
  int64_t next_usage_refresh_ms_ = 0;
  int64_t retry_submit_at_ms_ = 0;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_JOB_RUNNER_H_
