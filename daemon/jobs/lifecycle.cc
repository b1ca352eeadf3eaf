#include "daemon/jobs/lifecycle.h"

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/util/log.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using protocol::Job;
using protocol::JobEvent;
using protocol::JobStatus;

JobLifecycle::JobLifecycle(JobStore* store, Clock* clock, Metrics* metrics, Committed committed)
    : store_(store), clock_(clock), metrics_(metrics), committed_(std::move(committed)) {}

Job* JobLifecycle::FindLive(const std::string& id) {
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : &it->second;
}

absl::StatusOr<Job> JobLifecycle::Load(const std::string& id) {
  auto it = live_.find(id);
  if (it != live_.end()) return it->second;
  return store_->GetJob(id);
}

int64_t JobLifecycle::order(const std::string& id) const {
  auto it = order_.find(id);
  return it == order_.end() ? 0 : it->second;
}

nlohmann::json JobLifecycle::ToJson(const Job& job) const {
  Job j = job;
  auto it = queue_position_.find(job.id);
  if (IsWaiting(job.status) && it != queue_position_.end())
    j.queue_position = it->second;
  else
    j.queue_position.reset();
  return protocol::JobToJson(j);
}

JobEvent JobLifecycle::StatusEvent(JobStatus from, JobStatus to, const std::string& message) const {
  JobEvent e;
  e.time_ms = clock_->WallMs();
  e.type = "status";
  e.message = message;
  e.data = {{"status", protocol::JobStatusName(to)}, {"previous", protocol::JobStatusName(from)}};
  return e;
}

// Commits the job and its events (with the progress not yet committed
// first), then tells the hook.
absl::Status JobLifecycle::Commit(const Job& job, std::vector<JobEvent> events) {
  auto d = dirty_.find(job.id);
  if (d != dirty_.end()) {
    events.insert(events.begin(), d->second.begin(), d->second.end());
    dirty_.erase(d);
  }
  absl::Status s = store_->UpdateJob(job, &events);
  if (!s.ok()) {
    LogError("job store update failed", {{"job", job.id}, {"error", std::string(s.message())}});
    return s;
  }
  if (protocol::IsFinal(job.status)) {
    live_.erase(job.id);
    metrics_->Add("fjord_jobs_finished_total",
                  absl::StrCat("status=\"", protocol::JobStatusName(job.status), "\""));
  } else {
    live_[job.id] = job;
  }
  if (committed_) committed_(job, events);
  return absl::OkStatus();
}

absl::StatusOr<Job> JobLifecycle::Apply(Job job, Trigger trigger, const std::string& message,
                                        const std::function<void(Job&)>& edit) {
  FJORD_ASSIGN_OR_RETURN(JobStatus next, NextStatus(job.status, trigger));
  if (next == job.status && !edit) return job;
  const JobStatus from = job.status;
  job.status = next;
  if (edit) edit(job);
  if (next == JobStatus::kRunning && !job.started_at_ms) job.started_at_ms = clock_->WallMs();
  if (protocol::IsFinal(next)) job.finished_at_ms = clock_->WallMs();
  if (!HasTrainer(next)) job.gpu_ids.clear();
  std::vector<JobEvent> events;
  if (next != from) {
    events.push_back(StatusEvent(from, next, message));
    LogInfo("job status", {{"job", job.id},
                           {"tenant", job.tenant},
                           {"from", protocol::JobStatusName(from)},
                           {"to", protocol::JobStatusName(next)},
                           {"why", message}});
  }
  reschedule_ = true;
  FJORD_RETURN_IF_ERROR(Commit(job, std::move(events)));
  return job;
}

absl::StatusOr<CreateResult> JobLifecycle::Create(const Job& job, const std::string& fingerprint,
                                                  std::vector<JobEvent>* events) {
  FJORD_ASSIGN_OR_RETURN(CreateResult created, store_->CreateJob(job, fingerprint, events));
  if (!created.created) return created;
  live_[job.id] = job;
  order_[job.id] = ++order_counter_;
  reschedule_ = true;
  if (committed_) committed_(job, *events);
  return created;
}

absl::Status JobLifecycle::Delete(const std::string& id) {
  FJORD_RETURN_IF_ERROR(store_->DeleteJob(id));
  order_.erase(id);
  dirty_.erase(id);
  return absl::OkStatus();
}

void JobLifecycle::AddProgress(const std::string& id, JobEvent event) {
  dirty_[id].push_back(std::move(event));
}

void JobLifecycle::FlushDirty() {
  std::vector<std::string> ids;
  for (const auto& [id, events] : dirty_) ids.push_back(id);
  for (const std::string& id : ids) {
    auto it = live_.find(id);
    if (it == live_.end()) {
      dirty_.erase(id);
      continue;
    }
    (void)Commit(it->second, {});
  }
}

absl::Status JobLifecycle::Recover(const std::function<bool(const Job&)>& adopt) {
  FJORD_ASSIGN_OR_RETURN(std::vector<Job> jobs, store_->LiveJobs());
  for (Job& job : jobs) {
    order_[job.id] = ++order_counter_;
    if (adopt && !job.slurm_job_id.empty() && (HasTrainer(job.status) || IsWaiting(job.status)) &&
        adopt(job)) {
      live_[job.id] = job;
      continue;
    }
    if (job.status == JobStatus::kRunning) {
      if (job.restarts >= job.spec.max_restarts) {
        FJORD_RETURN_IF_ERROR(
            Apply(job, Trigger::kWorkerLostFinal,
                  "the daemon or node died while the job ran: no restarts left",
                  [](Job& x) {
                    x.error = protocol::JobError{
                        "INTERNAL",
                        absl::StrCat("the node or daemon died while the job ran, after ",
                                     x.restarts, " restarts"),
                        "", false};
                  })
                .status());
        continue;
      }
      FJORD_RETURN_IF_ERROR(
          Apply(job, Trigger::kRecover,
                "the daemon restarted while the job ran: resuming from the newest checkpoint",
                [](Job& x) {
                  ++x.restarts;
                  x.error = protocol::JobError{"UNAVAILABLE", "the daemon or node died", "", false};
                })
              .status());
      metrics_->Add("fjord_worker_restarts_total", "");
    } else {
      FJORD_ASSIGN_OR_RETURN(Job j, Apply(job, Trigger::kRecover, "the daemon restarted"));
      if (!protocol::IsFinal(j.status)) live_[j.id] = j;
    }
  }
  LogInfo("recovered jobs", {{"live", live_.size()}});
  return absl::OkStatus();
}

}  // namespace fjord::daemon
