// What a worker's end means for its job: pure functions from the facts
// (exit code or signal, what the worker reported, whether its adapter
// verified, the job's restarts) to one decision (the state machine's
// trigger, the job's error, a restart counted). No I/O; the server applies
// the decision (daemon/server/job_runner.h). Tested with a table in
// exit_policy_test.cc.
#ifndef FJORD_DAEMON_WORKER_EXIT_POLICY_H_
#define FJORD_DAEMON_WORKER_EXIT_POLICY_H_

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "daemon/jobs/state_machine.h"
#include "daemon/protocol/messages.h"
#include "daemon/worker/worker_process.h"

namespace fjord::daemon {

struct ExitDecision {
  Trigger trigger = Trigger::kWorkerLost;
  std::string message;                      // the status event's reason
  std::optional<protocol::JobError> error;  // the job's error becomes this
  bool clear_error = false;                 // the job's error is cleared
  bool count_restart = false;               // restarts + 1, fjord_worker_restarts_total + 1
  std::string result_adapter_path;          // set when the job succeeded
  // An event committed just before the status change (the validator's
  // report); its time is the caller's to set.
  std::optional<protocol::JobEvent> event;
};

// The validator (`fjord-train validate`) of a job in `validating` ended.
struct ValidatorEnd {
  WorkerExit exit;
  bool daemon_stopping = false;
  std::optional<nlohmann::json> report;  // validation.json, when it held a JSON object
  std::string log_tail;                  // the end of worker.log ("" when unreadable)
  std::string lost_reason;               // why the supervisor killed it ("" when it did not)
  int restarts = 0;
  int max_restarts = 0;
};
// exit 0 -> kValidationPassed (the report as a validation event);
// exit 2 -> kValidationFailed, INVALID_ARGUMENT naming the file and the first
// error the report gives (or the end of the log when there is no report);
// killed during the daemon's shutdown -> kShutdown; anything else (crash,
// kill, timeout) -> kValidatorLost while restarts are left (validated again),
// kValidatorCrashed after.
ExitDecision DecideValidatorEnd(const ValidatorEnd& end);

// The trainer of a job in `running`, `pausing` or `cancelling` ended.
struct TrainerEnd {
  protocol::JobStatus status = protocol::JobStatus::kRunning;
  WorkerExit exit;
  bool daemon_stopping = false;
  std::optional<protocol::JobError> reported_error;  // its last "error" event
  std::string lost_reason;                           // why the supervisor killed it
  // The cluster ended it in a way retrying cannot help (Slurm: cancelled
  // outside fjord, time limit): failed, not resumed.
  bool final_loss = false;
  absl::Status adapter;  // VerifyAdapterDir; looked at on exit 0 only
  std::string adapter_path;
  // An evaluation job: `adapter` and `adapter_path` are its report's
  // (VerifyReportDir), and the messages say so.
  bool evaluation = false;
  int restarts = 0;
  int max_restarts = 0;
};
// exit 0 with a verified adapter -> kWorkerSucceeded; exit 2 -> the user's
// error (kWorkerUserError); the daemon shutting down -> kShutdown (requeued);
// exit 75 (stopped) while `running` -> kWorkerStopped (requeued: a signal
// fjordd did not send); pausing/cancelling -> kWorkerStopped; anything else
// (a crash, a kill, silence, exit 0 with an unusable adapter) -> kWorkerLost
// while restarts are left (resumed from the newest checkpoint),
// kWorkerLostFinal after or when final_loss is set.
ExitDecision DecideTrainerEnd(const TrainerEnd& end);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_WORKER_EXIT_POLICY_H_
