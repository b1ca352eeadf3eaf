// JobRunner under the Slurm executor (executor.kind: slurm): submitting
// waiting jobs to Slurm and following Slurm's view of them (job_runner.h).
#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/server/job_runner.h"
#include "daemon/util/log.h"

namespace fjord::daemon {

using protocol::Job;
using protocol::JobEvent;
using protocol::JobStatus;

// Slurm schedules: every waiting job is submitted (oldest first), at most
// max_running_per_tenant per tenant and executor.slurm.max_jobs in all.
void JobRunner::SubmitToCluster() {
  const DaemonConfig& config = *ctx_->config;
  JobLifecycle& jobs = *ctx_->jobs;
  std::map<std::string, int> per_tenant;
  int submitted = 0;
  std::vector<std::pair<int64_t, std::string>> waiting;
  for (const auto& [id, job] : jobs.live()) {
    if (HasTrainer(job.status) || (IsWaiting(job.status) && ctx_->workers->Running(id))) {
      ++per_tenant[job.tenant];
      ++submitted;
    } else if (IsWaiting(job.status)) {
      waiting.push_back({jobs.order(id), id});
    }
  }
  std::sort(waiting.begin(), waiting.end());
  std::map<std::string, int> positions;
  for (const auto& [order, id] : waiting) {
    const Job* live = jobs.FindLive(id);
    if (live == nullptr) continue;
    const Job job = *live;
    if (submitted >= config.executor.slurm.max_jobs ||
        per_tenant[job.tenant] >= config.scheduler.max_running_per_tenant) {
      positions[id] = static_cast<int>(positions.size()) + 1;
      continue;
    }
    absl::Status s = LaunchTrainer(job, {});
    if (s.ok()) {
      ++per_tenant[job.tenant];
      ++submitted;
      continue;
    }
    if (absl::IsUnavailable(s)) {
      // slurmctld unreachable: the job waits and is submitted again later.
      LogWarning("cannot submit to Slurm: the job waits",
                 {{"job", job.id}, {"error", std::string(s.message())}});
      positions[id] = static_cast<int>(positions.size()) + 1;
      retry_submit_at_ms_ = ctx_->clock->NowMs() + kClusterRetryMs;
      continue;
    }
    LogError("Slurm refused a job", {{"job", job.id}, {"error", std::string(s.message())}});
    (void)jobs.Apply(job, Trigger::kWorkerLostFinal, "Slurm refused the job", [&](Job& x) {
      x.error =
          protocol::JobError{"FAILED_PRECONDITION",
                             absl::StrCat("Slurm refused the job: ", s.message()), "gpus", true};
    });
  }
  jobs.set_queue_positions(std::move(positions));
  ctx_->metrics->Set("fjord_queue_depth", "", static_cast<double>(waiting.size()));
}

void JobRunner::Adopted(const std::string& job_id) { runs_[job_id] = WorkerRun{}; }

// Slurm holds the job in its queue: a waiting job learns why; a running one
// was requeued by Slurm (a node failed, it was preempted, an operator ran
// scontrol requeue): it goes back to waiting and, when Slurm runs it again,
// its ranks resume from the newest checkpoint.
void JobRunner::OnClusterPending(const std::string& job_id, const std::string& detail) {
  const Job* live = ctx_->jobs->FindLive(job_id);
  if (live == nullptr) return;
  const Job job = *live;
  if (IsWaiting(job.status)) {
    if (job.queue_detail == detail) return;
    (void)ctx_->jobs->Apply(job, Trigger::kSubmitted, "", [&](Job& x) { x.queue_detail = detail; });
    return;
  }
  if (job.status == JobStatus::kPausing || job.status == JobStatus::kCancelling) {
    ctx_->workers->Kill(job_id);  // nothing left to checkpoint
    return;
  }
  if (job.status != JobStatus::kRunning) return;
  const std::string why = absl::StrCat(detail, " (requeued by Slurm)");
  if (job.restarts < job.spec.max_restarts) {
    ctx_->metrics->Add("fjord_worker_restarts_total", "");
    (void)ctx_->jobs->Apply(
        job, Trigger::kWorkerLost,
        absl::StrCat(why, ": it resumes from the newest checkpoint when Slurm runs it again"),
        [&](Job& x) {
          ++x.restarts;
          x.queue_detail = detail;
          x.error = protocol::JobError{"UNAVAILABLE", why, "", false};
        });
    return;
  }
  (void)ctx_->jobs->Apply(
      job, Trigger::kWorkerLostFinal, absl::StrCat(why, ": no restarts left"), [&](Job& x) {
        x.error = protocol::JobError{
            "INTERNAL", absl::StrCat(why, ", after ", x.restarts, " restarts"), "", false};
      });
  ctx_->workers->Kill(job_id);
}

void JobRunner::OnClusterStarted(const std::string& job_id, const std::string& nodes) {
  const Job* live = ctx_->jobs->FindLive(job_id);
  if (live == nullptr) return;
  const Job job = *live;
  const std::string message =
      absl::StrCat("Slurm started job ", job.slurm_job_id, " on ", nodes.empty() ? "?" : nodes);
  if (IsWaiting(job.status)) {
    (void)ctx_->jobs->Apply(job, Trigger::kSchedule, message, [&](Job& x) {
      x.node = nodes;
      x.queue_detail.clear();
    });
  } else if (HasTrainer(job.status) && job.node != nodes) {
    (void)ctx_->jobs->Apply(job, Trigger::kSubmitted, message, [&](Job& x) { x.node = nodes; });
  }
}

// A Slurm job that ended while its fjord job waited (it never ran, or Slurm
// had requeued it): failed when retrying cannot help, else submitted again
// (a restart counted).
void JobRunner::OnClusterEndWhileWaiting(const Job& job, const WorkerExit& exit,
                                         const std::string& why, bool final_loss) {
  const std::string reason = why.empty() ? absl::StrCat("its Slurm job ", exit.Describe()) : why;
  if (final_loss || job.restarts >= job.spec.max_restarts) {
    (void)ctx_->jobs->Apply(job, Trigger::kWorkerLostFinal, reason, [&](Job& x) {
      x.error = protocol::JobError{"INTERNAL", reason, "", false};
      x.queue_detail.clear();
    });
    return;
  }
  ctx_->metrics->Add("fjord_worker_restarts_total", "");
  (void)ctx_->jobs->Apply(job, Trigger::kSubmitted, "", [&](Job& x) {
    ++x.restarts;
    x.slurm_job_id.clear();
    x.queue_detail.clear();
    x.error = protocol::JobError{"UNAVAILABLE", reason, "", false};
  });
  JobEvent ev;
  ev.time_ms = ctx_->clock->WallMs();
  ev.type = "log";
  ev.message = absl::StrCat(reason, ": submitted again");
  ctx_->jobs->AddProgress(job.id, std::move(ev));
}

}  // namespace fjord::daemon
