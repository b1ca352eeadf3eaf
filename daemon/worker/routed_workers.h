// RoutedWorkers: the daemon's Workers when a cluster executor (Slurm) runs
// its trainers: launches marked LaunchOptions::cluster go to the cluster,
// everything else (validators) to the local supervisor; Stop, Kill and
// Running go to whichever holds the job.
#ifndef FJORD_DAEMON_WORKER_ROUTED_WORKERS_H_
#define FJORD_DAEMON_WORKER_ROUTED_WORKERS_H_

#include <string>

#include "daemon/worker/workers.h"

namespace fjord::daemon {

class RoutedWorkers : public Workers {
 public:
  // Neither owned; both must outlive this.
  RoutedWorkers(Workers* local, Workers* cluster) : local_(local), cluster_(cluster) {}

  std::string EndpointFor(const std::string& job_id) const override {
    return cluster_->EndpointFor(job_id);  // only trainers report
  }
  absl::Status Launch(const std::string& job_id, const WorkerSpec& spec,
                      const LaunchOptions& launch = {}) override {
    if (Running(job_id)) return absl::AlreadyExistsError("the job already has a worker");
    return launch.cluster ? cluster_->Launch(job_id, spec, launch)
                          : local_->Launch(job_id, spec, launch);
  }
  void Stop(const std::string& job_id) override { Holder(job_id)->Stop(job_id); }
  void Kill(const std::string& job_id) override { Holder(job_id)->Kill(job_id); }
  bool Running(const std::string& job_id) const override {
    return local_->Running(job_id) || cluster_->Running(job_id);
  }
  size_t size() const override { return local_->size() + cluster_->size(); }
  std::string ClusterJobId(const std::string& job_id) const override {
    return cluster_->ClusterJobId(job_id);
  }
  std::optional<std::string> ReportKeysFor(const std::string& job_id) const override {
    return cluster_->ReportKeysFor(job_id);
  }
  absl::Status CheckFits(const std::string& job_id, const WorkerSpec& spec, int ranks) override {
    return cluster_->CheckFits(job_id, spec, ranks);
  }

 private:
  Workers* Holder(const std::string& job_id) const {
    return local_->Running(job_id) ? local_ : cluster_;
  }
  Workers* local_;
  Workers* cluster_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_WORKER_ROUTED_WORKERS_H_
