#include "daemon/worker/exit_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using nlohmann::json;
using protocol::JobError;
using protocol::JobStatus;
using ::testing::HasSubstr;

WorkerExit Exited(int code) { return WorkerExit{code, 0}; }
WorkerExit Killed(int signal) { return WorkerExit{-1, signal}; }

// One row per way a trainer ends: the facts, then the trigger, the job's
// error code (or none) and a restart counted or not.
TEST(ExitPolicyTest, TrainerEnds) {
  struct Row {
    const char* what;
    TrainerEnd end;
    Trigger trigger;
    std::string error_code;  // "" = no error set
    bool restart;
    std::string message_has;
  };
  const JobError oom{"RESOURCE_EXHAUSTED", "CUDA out of memory", "", false};
  const JobError bad_line{"INVALID_ARGUMENT", "line 3: not a JSON object", "training_file", true};
  auto end = [](JobStatus status, WorkerExit exit) {
    TrainerEnd e;
    e.status = status;
    e.exit = exit;
    e.max_restarts = 2;
    e.adapter_path = "/s/acme/jobs/job-1/adapter";
    return e;
  };
  std::vector<Row> rows;
  rows.push_back({"exit 0, adapter verified", end(JobStatus::kRunning, Exited(0)),
                  Trigger::kWorkerSucceeded, "", false, "training finished"});
  {
    TrainerEnd e = end(JobStatus::kRunning, Exited(0));
    e.adapter = absl::DataLossError("adapter_model.safetensors: 3 bytes, too short for a header");
    rows.push_back(
        {"exit 0, torn adapter", e, Trigger::kWorkerLost, "INTERNAL", true, "adapter is unusable"});
  }
  {
    TrainerEnd e = end(JobStatus::kRunning, Exited(2));
    e.reported_error = bad_line;
    rows.push_back({"exit 2 with the worker's error", e, Trigger::kWorkerUserError,
                    "INVALID_ARGUMENT", false, "data or config is invalid"});
  }
  rows.push_back({"exit 2 without an error event", end(JobStatus::kRunning, Exited(2)),
                  Trigger::kWorkerUserError, "INVALID_ARGUMENT", false,
                  "data or config is invalid"});
  {
    // Slurm: cancelled outside fjord, restarts left all the same.
    TrainerEnd e = end(JobStatus::kRunning, Killed(9));
    e.lost_reason = "Slurm job 12 was cancelled outside fjord (scancel or an operator)";
    e.final_loss = true;
    rows.push_back({"the cluster ended it for good", e, Trigger::kWorkerLostFinal, "INTERNAL",
                    false, "cancelled outside fjord"});
  }
  {
    TrainerEnd e = end(JobStatus::kRunning, Exited(75));
    e.daemon_stopping = true;
    rows.push_back({"daemon shutting down", e, Trigger::kShutdown, "", false, "requeued"});
  }
  rows.push_back({"exit 75 not asked for", end(JobStatus::kRunning, Exited(75)),
                  Trigger::kWorkerStopped, "", false, "not sent by fjordd"});
  rows.push_back({"paused", end(JobStatus::kPausing, Exited(75)), Trigger::kWorkerStopped, "",
                  false, "paused after a checkpoint"});
  rows.push_back({"cancelled, killed after the grace period",
                  end(JobStatus::kCancelling, Killed(9)), Trigger::kWorkerStopped, "", false,
                  "cancelled"});
  {
    TrainerEnd e = end(JobStatus::kRunning, Exited(3));
    e.reported_error = oom;
    rows.push_back({"exit 3 after an OOM, restarts left", e, Trigger::kWorkerLost,
                    "RESOURCE_EXHAUSTED", true, "CUDA out of memory (the worker exit code 3)"});
  }
  {
    TrainerEnd e = end(JobStatus::kRunning, Killed(9));
    e.lost_reason = "the worker sent no heartbeat for 2 s and was killed";
    e.restarts = 2;
    rows.push_back({"silent, no restarts left", e, Trigger::kWorkerLostFinal, "INTERNAL", false,
                    "no heartbeat for 2 s and was killed: no restarts left"});
  }
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    const ExitDecision d = DecideTrainerEnd(r.end);
    EXPECT_EQ(d.trigger, r.trigger) << TriggerName(d.trigger);
    EXPECT_EQ(d.error ? d.error->code : "", r.error_code);
    EXPECT_EQ(d.count_restart, r.restart);
    EXPECT_THAT(d.error ? d.message + " | " + d.error->message : d.message,
                HasSubstr(r.message_has));
  }
  // A user error keeps the worker's own message and says it is the user's.
  TrainerEnd user = end(JobStatus::kRunning, Exited(2));
  user.reported_error = bad_line;
  const ExitDecision d = DecideTrainerEnd(user);
  EXPECT_EQ(d.error->message, "line 3: not a JSON object");
  EXPECT_EQ(d.error->param, "training_file");
  EXPECT_TRUE(d.error->user_error);
  // Success names the adapter and clears an error of an earlier run.
  const ExitDecision ok = DecideTrainerEnd(end(JobStatus::kRunning, Exited(0)));
  EXPECT_EQ(ok.result_adapter_path, "/s/acme/jobs/job-1/adapter");
  EXPECT_TRUE(ok.clear_error);
}

TEST(ExitPolicyTest, ValidatorEnds) {
  auto end = [](WorkerExit exit) {
    ValidatorEnd e;
    e.exit = exit;
    e.max_restarts = 1;
    return e;
  };
  // Passed: the report becomes the validation event's data.
  ValidatorEnd passed = end(Exited(0));
  passed.report = json{{"valid", true}, {"train", {{"valid", true}, {"lines", 4}}}};
  ExitDecision d = DecideValidatorEnd(passed);
  EXPECT_EQ(d.trigger, Trigger::kValidationPassed);
  ASSERT_TRUE(d.event.has_value());
  EXPECT_EQ(d.event->type, "validation");
  EXPECT_EQ(d.event->data["train"]["lines"], 4);
  EXPECT_FALSE(d.error.has_value());
  // Refused: the first bad part names the file and the message.
  ValidatorEnd refused = end(Exited(2));
  refused.report =
      json{{"valid", false},
           {"train", {{"valid", true}}},
           {"validation", {{"valid", false}, {"summary", "line 7: missing field 'messages'"}}}};
  d = DecideValidatorEnd(refused);
  EXPECT_EQ(d.trigger, Trigger::kValidationFailed);
  ASSERT_TRUE(d.error.has_value());
  EXPECT_EQ(d.error->code, "INVALID_ARGUMENT");
  EXPECT_EQ(d.error->param, "validation_file");
  EXPECT_EQ(d.error->message, "line 7: missing field 'messages'");
  EXPECT_TRUE(d.error->user_error);
  // The held-out prompts come after the data files.
  refused.report =
      json{{"valid", false},
           {"train", {{"valid", true}}},
           {"heldout", {{"valid", false}, {"summary", "line 2 (answer): missing field 'answer'"}}}};
  d = DecideValidatorEnd(refused);
  EXPECT_EQ(d.error->param, "heldout_file");
  EXPECT_EQ(d.error->message, "line 2 (answer): missing field 'answer'");
  refused.report =
      json{{"valid", false}, {"heldout", {{"error", "cannot open held-out file /s/h.jsonl"}}}};
  d = DecideValidatorEnd(refused);
  EXPECT_EQ(d.error->param, "heldout_file");
  EXPECT_EQ(d.error->message, "cannot open held-out file /s/h.jsonl");
  // An error of the whole report wins and names no file.
  refused.report = json{{"valid", false},
                        {"train", {{"error", "line 1: x"}}},
                        {"error", "tokenizer.json is missing"}};
  d = DecideValidatorEnd(refused);
  EXPECT_EQ(d.error->message, "tokenizer.json is missing");
  EXPECT_EQ(d.error->param, "");
  // No report: the end of the log is the message.
  ValidatorEnd no_report = end(Exited(2));
  no_report.log_tail = "fake validator: refusing this data without a report\n";
  d = DecideValidatorEnd(no_report);
  EXPECT_EQ(d.error->message, no_report.log_tail);
  EXPECT_EQ(d.error->param, "training_file");
  // Neither: the generic message.
  d = DecideValidatorEnd(end(Exited(2)));
  EXPECT_EQ(d.error->message, "the job's data or config is invalid");
  // Killed: validated again while restarts are left, then failed.
  d = DecideValidatorEnd(end(Killed(9)));
  EXPECT_EQ(d.trigger, Trigger::kValidatorLost);
  EXPECT_TRUE(d.count_restart);
  EXPECT_THAT(d.message, HasSubstr("the validator killed by signal 9"));
  EXPECT_THAT(d.message, HasSubstr("validating again (restart 1 of 1)"));
  ValidatorEnd timed_out = end(Killed(9));
  timed_out.restarts = 1;
  timed_out.lost_reason = "the validator ran longer than 20 s and was killed";
  d = DecideValidatorEnd(timed_out);
  EXPECT_EQ(d.trigger, Trigger::kValidatorCrashed);
  EXPECT_FALSE(d.count_restart);
  EXPECT_EQ(d.error->message, "the validator ran longer than 20 s and was killed");
  // Killed by the daemon's own shutdown: not the job's fault.
  ValidatorEnd shutdown = end(Killed(9));
  shutdown.daemon_stopping = true;
  d = DecideValidatorEnd(shutdown);
  EXPECT_EQ(d.trigger, Trigger::kShutdown);
  EXPECT_FALSE(d.error.has_value());
}

}  // namespace
}  // namespace fjord::daemon
