#include "daemon/worker/exit_policy.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/worker_protocol.h"

namespace fjord::daemon {
namespace {

using nlohmann::json;
using protocol::JobError;
using protocol::JobStatus;

protocol::JobEvent ValidationEvent(const std::string& message, const std::optional<json>& report) {
  protocol::JobEvent e;
  e.type = "validation";
  e.message = message;
  if (report) e.data = *report;
  return e;
}

// exit 2: the first part of the report (train, validation, then heldout)
// that is not valid names the file and the message; an error of the whole
// report wins; without a report, the end of the worker's log is the message.
void RefusalFromReport(const std::optional<json>& report, const std::string& log_tail,
                       std::string* message, std::string* param) {
  *message = "the job's data or config is invalid";
  *param = "training_file";
  if (!report) {
    if (!log_tail.empty()) *message = log_tail;
    return;
  }
  for (const auto& [part, field] :
       {std::pair{"train", "training_file"}, std::pair{"validation", "validation_file"},
        std::pair{"heldout", "heldout_file"}}) {
    if (!report->contains(part) || !(*report)[part].is_object()) continue;
    const json& r = (*report)[part];
    const bool bad =
        r.value("valid", true) == false || r.contains("error") || r.value("error_count", 0) > 0;
    if (!bad) continue;
    *param = field;
    if (r.contains("error") && r["error"].is_string())
      *message = r["error"];
    else if (r.contains("summary") && r["summary"].is_string())
      *message = r["summary"];
    break;
  }
  // An evaluation job's datasets (lora/compare.h, ValidateEvaluation).
  if (report->contains("datasets") && (*report)["datasets"].is_array()) {
    const json& ds = (*report)["datasets"];
    for (size_t i = 0; i < ds.size(); ++i) {
      if (!ds[i].is_object()) continue;
      const json& r = ds[i];
      const bool bad =
          r.value("valid", true) == false || r.contains("error") || r.value("error_count", 0) > 0;
      if (!bad) continue;
      *param = absl::StrCat("datasets[", i, "]");
      const std::string name = r.value("name", std::string());
      if (r.contains("error") && r["error"].is_string())
        *message = r["error"];
      else if (r.contains("summary") && r["summary"].is_string())
        *message = absl::StrCat(name, ": ", r["summary"].get<std::string>());
      break;
    }
  }
  if (report->contains("error") && (*report)["error"].is_string()) {
    *message = (*report)["error"];
    *param = "";
  }
}

}  // namespace

ExitDecision DecideValidatorEnd(const ValidatorEnd& end) {
  ExitDecision d;
  const WorkerExit& exit = end.exit;
  if (end.daemon_stopping && exit.signal != 0) {
    d.trigger = Trigger::kShutdown;
    d.message = "validation interrupted by the daemon's shutdown";
    return d;
  }
  if (exit.normal() && exit.exit_code == protocol::kWorkerExitOk) {
    d.trigger = Trigger::kValidationPassed;
    d.message = "validated";
    d.event = ValidationEvent("data and config are valid", end.report);
    return d;
  }
  if (exit.normal() && exit.exit_code == protocol::kWorkerExitUserError) {
    std::string message, param;
    RefusalFromReport(end.report, end.log_tail, &message, &param);
    d.trigger = Trigger::kValidationFailed;
    d.message = "validation failed";
    d.event = ValidationEvent(message, end.report);
    d.error = JobError{"INVALID_ARGUMENT", message, param, true};
    return d;
  }
  // Crashed, killed (the OOM killer, an operator) or timed out: validate
  // again, counted against max_restarts like a lost trainer, so a file that
  // crashes the validator every time still fails the job.
  const std::string why =
      end.lost_reason.empty() ? absl::StrCat("the validator ", exit.Describe()) : end.lost_reason;
  d.error = JobError{"INTERNAL", why, "", false};
  if (end.restarts < end.max_restarts) {
    d.trigger = Trigger::kValidatorLost;
    d.message = absl::StrCat(why, ": validating again (restart ", end.restarts + 1, " of ",
                             end.max_restarts, ")");
    d.event = ValidationEvent(d.message, std::nullopt);
    d.count_restart = true;
    return d;
  }
  d.trigger = Trigger::kValidatorCrashed;
  d.message = absl::StrCat(why, ": no restarts left");
  return d;
}

ExitDecision DecideTrainerEnd(const TrainerEnd& end) {
  ExitDecision d;
  const WorkerExit& exit = end.exit;
  std::string lost_reason = end.lost_reason;
  if (exit.normal() && exit.exit_code == protocol::kWorkerExitOk) {
    // Never report an adapter that is missing or torn (a full disk, a buggy
    // or hostile worker): like a crash otherwise.
    if (end.adapter.ok()) {
      d.trigger = Trigger::kWorkerSucceeded;
      d.message = end.evaluation ? "evaluation finished" : "training finished";
      d.result_adapter_path = end.adapter_path;
      d.clear_error = true;
      return d;
    }
    lost_reason =
        absl::StrCat("the worker exited 0 but its ", end.evaluation ? "report" : "adapter",
                     " is unusable: ", end.adapter.message());
  }
  if (exit.normal() && exit.exit_code == protocol::kWorkerExitUserError) {
    JobError err = end.reported_error.value_or(JobError{
        "INVALID_ARGUMENT", "the worker refused the job's data or config (exit code 2)", "", true});
    err.user_error = true;
    d.trigger = Trigger::kWorkerUserError;
    d.message = "the job's data or config is invalid";
    d.error = err;
    return d;
  }
  if (end.daemon_stopping) {
    d.trigger = Trigger::kShutdown;
    d.message = "the daemon shut down: requeued";
    return d;
  }
  if (exit.normal() && exit.exit_code == protocol::kWorkerExitStopped &&
      end.status == JobStatus::kRunning) {
    d.trigger = Trigger::kWorkerStopped;
    d.message = "the worker stopped on a signal it was not sent by fjordd: requeued";
    return d;
  }
  if (end.status == JobStatus::kPausing || end.status == JobStatus::kCancelling) {
    d.trigger = Trigger::kWorkerStopped;
    d.message = end.status == JobStatus::kPausing ? "paused after a checkpoint" : "cancelled";
    return d;
  }
  const std::string why =
      lost_reason.empty() ? absl::StrCat("the worker ", exit.Describe()) : lost_reason;
  JobError err = end.reported_error.value_or(JobError{"INTERNAL", why, "", false});
  if (end.reported_error) err.message = absl::StrCat(err.message, " (", why, ")");
  err.user_error = false;
  d.error = err;
  if (end.final_loss) {
    d.trigger = Trigger::kWorkerLostFinal;
    d.message = why;
    return d;
  }
  if (end.restarts < end.max_restarts) {
    d.trigger = Trigger::kWorkerLost;
    d.message = absl::StrCat(why, ": requeued, resuming from the newest checkpoint");
    d.count_restart = true;
    return d;
  }
  d.trigger = Trigger::kWorkerLostFinal;
  d.message = absl::StrCat(why, ": no restarts left");
  return d;
}

}  // namespace fjord::daemon
