#include "daemon/jobs/state_machine.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;

TEST(StateMachineTest, HappyPath) {
  JobStatus s = JobStatus::kValidating;
  for (Trigger t : {Trigger::kValidationPassed, Trigger::kSchedule, Trigger::kWorkerSucceeded}) {
    absl::StatusOr<JobStatus> n = NextStatus(s, t);
    ASSERT_TRUE(n.ok()) << n.status();
    s = *n;
  }
  EXPECT_EQ(s, JobStatus::kSucceeded);
}

TEST(StateMachineTest, PauseResumeAndCancel) {
  EXPECT_EQ(*NextStatus(JobStatus::kRunning, Trigger::kPause), JobStatus::kPausing);
  EXPECT_EQ(*NextStatus(JobStatus::kPausing, Trigger::kWorkerStopped), JobStatus::kPaused);
  EXPECT_EQ(*NextStatus(JobStatus::kPaused, Trigger::kResume), JobStatus::kQueued);
  EXPECT_EQ(*NextStatus(JobStatus::kRunning, Trigger::kCancel), JobStatus::kCancelling);
  EXPECT_EQ(*NextStatus(JobStatus::kCancelling, Trigger::kWorkerStopped), JobStatus::kCancelled);
  EXPECT_EQ(*NextStatus(JobStatus::kQueued, Trigger::kCancel), JobStatus::kCancelled);
  // Idempotent requests.
  EXPECT_EQ(*NextStatus(JobStatus::kCancelled, Trigger::kCancel), JobStatus::kCancelled);
  EXPECT_EQ(*NextStatus(JobStatus::kPaused, Trigger::kPause), JobStatus::kPaused);
}

TEST(StateMachineTest, WorkerLossAndRestarts) {
  EXPECT_EQ(*NextStatus(JobStatus::kRunning, Trigger::kWorkerLost), JobStatus::kRequeued);
  EXPECT_EQ(*NextStatus(JobStatus::kRunning, Trigger::kWorkerLostFinal), JobStatus::kFailed);
  EXPECT_EQ(*NextStatus(JobStatus::kRequeued, Trigger::kSchedule), JobStatus::kRunning);
  // Submitted to Slurm, a job waits there as it waited here.
  EXPECT_EQ(*NextStatus(JobStatus::kQueued, Trigger::kSubmitted), JobStatus::kQueued);
  EXPECT_EQ(*NextStatus(JobStatus::kRequeued, Trigger::kSubmitted), JobStatus::kRequeued);
  EXPECT_FALSE(NextStatus(JobStatus::kRunning, Trigger::kSubmitted).ok());
  EXPECT_EQ(*NextStatus(JobStatus::kRunning, Trigger::kRecover), JobStatus::kRequeued);
  EXPECT_EQ(*NextStatus(JobStatus::kRunning, Trigger::kShutdown), JobStatus::kRequeued);
  EXPECT_EQ(*NextStatus(JobStatus::kValidating, Trigger::kRecover), JobStatus::kValidating);
  // A lost validator (killed, crashed, timed out) is run again while
  // restarts are left, then the job fails.
  EXPECT_EQ(*NextStatus(JobStatus::kValidating, Trigger::kValidatorLost), JobStatus::kValidating);
  EXPECT_EQ(*NextStatus(JobStatus::kValidating, Trigger::kValidatorCrashed), JobStatus::kFailed);
  EXPECT_FALSE(NextStatus(JobStatus::kQueued, Trigger::kValidatorLost).ok());
}

TEST(StateMachineTest, RefusedPairsNameTheStatus) {
  absl::StatusOr<JobStatus> n = NextStatus(JobStatus::kSucceeded, Trigger::kCancel);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(n.status().message(), HasSubstr("cannot cancel a job that is succeeded"));
  EXPECT_THAT(NextStatus(JobStatus::kValidating, Trigger::kPause).status().message(),
              HasSubstr("cannot pause a job that is validating"));
  EXPECT_FALSE(NextStatus(JobStatus::kRunning, Trigger::kValidationPassed).ok());
  EXPECT_FALSE(NextStatus(JobStatus::kPausing, Trigger::kResume).ok());
}

// Final statuses accept nothing but a repeated cancel of a cancelled job.
TEST(StateMachineTest, FinalStatusesAreFinal) {
  for (JobStatus s : {JobStatus::kSucceeded, JobStatus::kFailed, JobStatus::kCancelled}) {
    for (int t = 0; t <= static_cast<int>(Trigger::kRecover); ++t) {
      absl::StatusOr<JobStatus> n = NextStatus(s, static_cast<Trigger>(t));
      if (n.ok()) {
        EXPECT_EQ(*n, s);
        EXPECT_EQ(s, JobStatus::kCancelled);
      }
    }
  }
}

// Every non-final status survives a daemon restart somehow.
TEST(StateMachineTest, EveryLiveStatusRecovers) {
  for (JobStatus s : protocol::kAllJobStatuses) {
    if (protocol::IsFinal(s)) continue;
    EXPECT_TRUE(NextStatus(s, Trigger::kRecover).ok()) << protocol::JobStatusName(s);
    EXPECT_TRUE(NextStatus(s, Trigger::kShutdown).ok()) << protocol::JobStatusName(s);
  }
}

}  // namespace
}  // namespace fjord::daemon
