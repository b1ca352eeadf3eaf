// The job state machine (docs/protocol.md §6): an explicit table of
// (status, trigger) -> status. NextStatus is the one place that refuses
// every pair not in the table. No I/O; thread-safe.
#ifndef FJORD_DAEMON_JOBS_STATE_MACHINE_H_
#define FJORD_DAEMON_JOBS_STATE_MACHINE_H_

#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"

namespace fjord::daemon {

using protocol::JobStatus;

enum class Trigger {
  kValidationPassed,  // fjord-train validate exit 0
  kValidationFailed,  // exit 2: the user's data/config
  kValidatorLost,     // crash, kill, timeout with restarts left: validate again
  kValidatorCrashed,  // the same with no restarts left
  kSchedule,          // a slot was given
  kWorkerSucceeded,   // exit 0
  kWorkerUserError,   // exit 2
  kWorkerLost,        // crash/kill/silence with restarts left
  kWorkerLostFinal,   // the same with no restarts left
  kWorkerStopped,     // exited after SIGTERM (pause/cancel)
  kCancel,
  kPause,
  kResume,
  kShutdown,   // graceful daemon shutdown
  kRecover,    // found unfinished when the daemon starts
  kSubmitted,  // handed to the cluster's scheduler (Slurm): it waits there
};

const char* TriggerName(Trigger trigger);

// Waiting for a slot: queued or requeued.
bool IsWaiting(JobStatus status);
// A training worker runs: running, pausing or cancelling.
bool HasTrainer(JobStatus status);

// The status after `trigger`, which may equal `from` (a no-op such as
// cancelling a cancelled job). FailedPrecondition("cannot pause a job that is
// succeeded") for a pair outside the table.
absl::StatusOr<JobStatus> NextStatus(JobStatus from, Trigger trigger);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_JOBS_STATE_MACHINE_H_
