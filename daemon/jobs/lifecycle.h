// JobLifecycle: the only code that changes a job.
//
// Every status change goes through Apply: the state machine's table
// (state_machine.h) decides, the store commits the job and its events
// (fsynced), then the hook tells the rest of the daemon (events.jsonl,
// streams). Worker progress (steps, metrics) is kept as dirty events and
// committed once per loop iteration (FlushDirty). Jobs that have not ended
// live in memory (live()); ended ones only in the store.
//
// Not thread-safe: the server loop owns it.
#ifndef FJORD_DAEMON_JOBS_LIFECYCLE_H_
#define FJORD_DAEMON_JOBS_LIFECYCLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/jobs/state_machine.h"
#include "daemon/jobs/store.h"
#include "daemon/metrics/metrics.h"
#include "daemon/protocol/messages.h"
#include "daemon/util/clock.h"

namespace fjord::daemon {

class JobLifecycle {
 public:
  // Called after each commit with the job as committed and the events it
  // added (seq assigned): the daemon appends them to events.jsonl and pumps
  // its streams.
  using Committed =
      std::function<void(const protocol::Job&, const std::vector<protocol::JobEvent>&)>;

  // None owned; each must outlive this.
  JobLifecycle(JobStore* store, Clock* clock, Metrics* metrics, Committed committed);

  // Jobs that have not ended, by id.
  const std::map<std::string, protocol::Job>& live() const { return live_; }
  // A live job to update in place (worker progress: step, metrics), or null.
  // Such changes reach the store with the next FlushDirty.
  protocol::Job* FindLive(const std::string& id);
  // The job, live or from the store; NotFound when there is none.
  absl::StatusOr<protocol::Job> Load(const std::string& id);

  // The one path for status changes: NextStatus(job.status, trigger) decides
  // (FailedPrecondition outside the table); `edit` changes the job's fields
  // with it. A no-op transition with no edit commits nothing. Returns the
  // job as committed.
  absl::StatusOr<protocol::Job> Apply(protocol::Job job, Trigger trigger,
                                      const std::string& message,
                                      const std::function<void(protocol::Job&)>& edit = nullptr);

  // A job job.create accepted: stored with its first events (the store's
  // idempotency rules apply), then live and last in the FIFO order.
  absl::StatusOr<CreateResult> Create(const protocol::Job& job, const std::string& fingerprint,
                                      std::vector<protocol::JobEvent>* events);
  // job.delete: forgets an ended job's record, events and FIFO place.
  absl::Status Delete(const std::string& id);
  // The job goes to the back of the FIFO order (job.resume).
  void Requeue(const std::string& id) { order_[id] = ++order_counter_; }

  // A progress event of a live job, committed with the next FlushDirty (or
  // the job's next status change).
  void AddProgress(const std::string& id, protocol::JobEvent event);
  void FlushDirty();

  // At start: jobs the last run left unfinished. A running job is requeued
  // (a restart counted; failed when none is left); the others take their
  // kRecover transition. Except: a job with a Slurm job (slurm_job_id) that
  // runs or waits is offered to `adopt` first; when it returns true the job
  // is kept exactly as it was (its Slurm job carried on without fjordd).
  absl::Status Recover(const std::function<bool(const protocol::Job&)>& adopt = nullptr);

  // FIFO order (smaller is older) and the scheduler's queue positions.
  int64_t order(const std::string& id) const;
  void set_queue_positions(std::map<std::string, int> positions) {
    queue_position_ = std::move(positions);
  }
  // The job as the protocol shows it (queue_position for waiting jobs).
  nlohmann::json ToJson(const protocol::Job& job) const;

  // Set by every status change: the scheduler should run again.
  bool TakeReschedule() {
    const bool r = reschedule_;
    reschedule_ = false;
    return r;
  }
  void RequestReschedule() { reschedule_ = true; }

 private:
  absl::Status Commit(const protocol::Job& job, std::vector<protocol::JobEvent> events);
  protocol::JobEvent StatusEvent(protocol::JobStatus from, protocol::JobStatus to,
                                 const std::string& message) const;

  JobStore* store_;
  Clock* clock_;
  Metrics* metrics_;
  Committed committed_;
  std::map<std::string, protocol::Job> live_;
  std::map<std::string, std::vector<protocol::JobEvent>> dirty_;  // progress not yet committed
  std::map<std::string, int64_t> order_;                          // job id -> FIFO order
  int64_t order_counter_ = 0;
  std::map<std::string, int> queue_position_;
  bool reschedule_ = true;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_JOBS_LIFECYCLE_H_
