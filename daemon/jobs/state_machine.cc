#include "daemon/jobs/state_machine.h"

#include "absl/strings/str_cat.h"

namespace fjord::daemon {
namespace {

using S = JobStatus;
using T = Trigger;

struct Row {
  S from;
  T trigger;
  S to;
};

// Every allowed transition. Anything else is refused by NextStatus.
constexpr Row kTable[] = {
    {S::kValidating, T::kValidationPassed, S::kQueued},
    {S::kValidating, T::kValidationFailed, S::kFailed},
    {S::kValidating, T::kValidatorLost, S::kValidating},  // restarts + 1, validated again
    {S::kValidating, T::kValidatorCrashed, S::kFailed},
    {S::kValidating, T::kCancel, S::kCancelled},
    {S::kValidating, T::kShutdown, S::kValidating},
    {S::kValidating, T::kRecover, S::kValidating},

    {S::kQueued, T::kSchedule, S::kRunning},
    {S::kQueued, T::kPause, S::kPaused},
    {S::kQueued, T::kCancel, S::kCancelled},
    {S::kQueued, T::kResume, S::kQueued},
    {S::kQueued, T::kShutdown, S::kQueued},
    {S::kQueued, T::kRecover, S::kQueued},
    {S::kQueued, T::kWorkerLostFinal, S::kFailed},  // the worker could not start

    {S::kQueued, T::kSubmitted, S::kQueued},
    {S::kRequeued, T::kSchedule, S::kRunning},
    {S::kRequeued, T::kSubmitted, S::kRequeued},
    {S::kRequeued, T::kPause, S::kPaused},
    {S::kRequeued, T::kCancel, S::kCancelled},
    {S::kRequeued, T::kResume, S::kRequeued},
    {S::kRequeued, T::kShutdown, S::kRequeued},
    {S::kRequeued, T::kRecover, S::kRequeued},
    {S::kRequeued, T::kWorkerLostFinal, S::kFailed},

    {S::kRunning, T::kWorkerSucceeded, S::kSucceeded},
    {S::kRunning, T::kWorkerUserError, S::kFailed},
    {S::kRunning, T::kWorkerLost, S::kRequeued},
    {S::kRunning, T::kWorkerLostFinal, S::kFailed},
    {S::kRunning, T::kWorkerStopped, S::kRequeued},  // stopped without being asked
    {S::kRunning, T::kPause, S::kPausing},
    {S::kRunning, T::kCancel, S::kCancelling},
    {S::kRunning, T::kResume, S::kRunning},
    {S::kRunning, T::kShutdown, S::kRequeued},
    {S::kRunning, T::kRecover, S::kRequeued},

    {S::kPausing, T::kWorkerStopped, S::kPaused},
    {S::kPausing, T::kWorkerLost, S::kPaused},
    {S::kPausing, T::kWorkerLostFinal, S::kPaused},
    {S::kPausing, T::kWorkerSucceeded, S::kSucceeded},  // it finished first
    {S::kPausing, T::kWorkerUserError, S::kFailed},
    {S::kPausing, T::kPause, S::kPausing},
    {S::kPausing, T::kCancel, S::kCancelling},
    {S::kPausing, T::kShutdown, S::kPaused},
    {S::kPausing, T::kRecover, S::kPaused},

    {S::kCancelling, T::kWorkerStopped, S::kCancelled},
    {S::kCancelling, T::kWorkerLost, S::kCancelled},
    {S::kCancelling, T::kWorkerLostFinal, S::kCancelled},
    {S::kCancelling, T::kWorkerSucceeded, S::kSucceeded},  // it finished first
    {S::kCancelling, T::kWorkerUserError, S::kFailed},
    {S::kCancelling, T::kCancel, S::kCancelling},
    {S::kCancelling, T::kShutdown, S::kCancelled},
    {S::kCancelling, T::kRecover, S::kCancelled},

    {S::kPaused, T::kResume, S::kQueued},
    {S::kPaused, T::kPause, S::kPaused},
    {S::kPaused, T::kCancel, S::kCancelled},
    {S::kPaused, T::kShutdown, S::kPaused},
    {S::kPaused, T::kRecover, S::kPaused},

    {S::kCancelled, T::kCancel, S::kCancelled},
};

}  // namespace

const char* TriggerName(Trigger t) {
  switch (t) {
    case T::kValidationPassed:
      return "pass validation";
    case T::kValidationFailed:
      return "fail validation";
    case T::kValidatorLost:
      return "lose the validator of";
    case T::kValidatorCrashed:
      return "lose the validator of";
    case T::kSchedule:
      return "schedule";
    case T::kWorkerSucceeded:
      return "succeed";
    case T::kWorkerUserError:
      return "fail";
    case T::kWorkerLost:
      return "lose the worker of";
    case T::kWorkerLostFinal:
      return "lose the worker of";
    case T::kWorkerStopped:
      return "stop";
    case T::kCancel:
      return "cancel";
    case T::kPause:
      return "pause";
    case T::kResume:
      return "resume";
    case T::kShutdown:
      return "shut down";
    case T::kRecover:
      return "recover";
    case T::kSubmitted:
      return "submit";
  }
  return "?";
}

absl::StatusOr<JobStatus> NextStatus(JobStatus from, Trigger trigger) {
  for (const Row& r : kTable) {
    if (r.from == from && r.trigger == trigger) return r.to;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot ", TriggerName(trigger), " a job that is ", protocol::JobStatusName(from)));
}

bool IsWaiting(JobStatus status) {
  return status == JobStatus::kQueued || status == JobStatus::kRequeued;
}

bool HasTrainer(JobStatus status) {
  return status == JobStatus::kRunning || status == JobStatus::kPausing ||
         status == JobStatus::kCancelling;
}

}  // namespace fjord::daemon
