// fjordd with the real trainer: fjord-train (lora/cli) on the demo model
// (tools/demo, a tiny Llama) and its data, CPU training, a few steps. The
// job's adapter is a PEFT adapter on the storage root; kill -9 of the daemon
// mid-training resumes from the newest checkpoint; bad data fails
// validation in the worker; a job with gpus: 2 on a CPU node trains on two
// data-parallel ranks, and kill -9 of one rank resumes the job on two again.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fjord::testing {
namespace {

using protocol::Job;
using protocol::JobStatus;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

HarnessOptions TrainerOptions() {
  HarnessOptions o;
  o.worker_program = fs::absolute("lora/cli/fjord-train").string();
  o.model_dir = fs::absolute("tools/demo/out/model").string();
  o.worker_extra =
      "  args: [\"--set\", \"training.device=cpu\", \"--set\", \"training.threads=1\"]\n";
  o.cpu_slots = 1;
  return o;
}

// The first n lines of the demo's training data.
std::string DemoData(int n) {
  std::ifstream f("tools/demo/out/data/train.jsonl");
  std::string line, out;
  for (int i = 0; i < n && std::getline(f, line); ++i) out += line + "\n";
  return out;
}

// The step of each "start" event: one per run of the trainer.
std::vector<int64_t> StartSteps(const EventPage& events) {
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  return starts;
}

protocol::JobSpec Spec(Client& c, int steps, int checkpoint_every) {
  protocol::JobSpec spec;
  absl::StatusOr<protocol::FileInfo> f = c.UploadBytes(DemoData(64), "train.jsonl");
  EXPECT_TRUE(f.ok()) << f.status();
  spec.model = "tiny";
  spec.training_file = f.ok() ? f->id : "";
  spec.hyperparameters.max_steps = steps;
  spec.hyperparameters.batch_size = 2;
  spec.hyperparameters.max_length = 128;
  spec.hyperparameters.learning_rate = 2e-3;
  spec.hyperparameters.checkpoint_every_steps = checkpoint_every;
  spec.lora.r = 8;
  return spec;
}

TEST(DaemonTrainerTest, RealTrainingProducesAPeftAdapter) {
  DaemonHarness h(TrainerOptions());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(Spec(*acme, 4, 2)));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 240));
  ASSERT_EQ(done.status, JobStatus::kSucceeded)
      << (done.error ? done.error->message : "") << "\n"
      << ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log");
  EXPECT_EQ(done.step, 4);
  EXPECT_GT(done.trained_tokens, 0);
  EXPECT_GT(done.metrics.value("loss", 0.0), 0.0);
  const std::string adapter = done.result_adapter_path;
  nlohmann::json cfg = nlohmann::json::parse(ReadFile(adapter + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 8);
  EXPECT_GT(fs::file_size(adapter + "/adapter_model.safetensors"), 1000u);
  ASSERT_OK_AND_ASSIGN(files, acme->DownloadAdapter(job.id, h.dir() + "/dl"));
  EXPECT_GE(files.size(), 2u);
  EXPECT_EQ(ReadFile(h.dir() + "/dl/adapter_model.safetensors"),
            ReadFile(adapter + "/adapter_model.safetensors"));
  ASSERT_OK_AND_ASSIGN(ckpts, acme->ListCheckpoints(job.id));
  EXPECT_FALSE(ckpts.empty());
}

TEST(DaemonTrainerTest, Kill9OfTheDaemonResumesRealTrainingFromItsCheckpoint) {
  DaemonHarness h(TrainerOptions());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string id;
  {
    auto acme = h.Acme();
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(Spec(*acme, 60, 2)));
    id = job.id;
    ASSERT_TRUE(h.WaitFor(
                     *acme, id, [](const Job& j) { return j.latest_checkpoint.has_value(); }, 240)
                    .ok());
  }
  h.Kill9();
  h.Start();
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id, 300));
  ASSERT_EQ(done.status, JobStatus::kSucceeded)
      << ReadFile(h.storage() + "/acme/jobs/" + id + "/worker.log");
  EXPECT_EQ(done.restarts, 1);
  EXPECT_EQ(done.step, 60);
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(id, 0, 1000));
  const std::vector<int64_t> starts = StartSteps(events);
  ASSERT_EQ(starts.size(), 2u) << h.log();
  EXPECT_GE(starts[1], 2);  // resumed from a checkpoint, not from step 0
}

// The pid of the fjord-train process of rank `rank` whose command line names
// `job_id`, or nullopt.
std::optional<pid_t> RankPid(const std::string& job_id, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = ReadFile(e.path().string() + "/cmdline");
    if (cmdline.find(job_id) == std::string::npos) continue;
    const std::string env = ReadFile(e.path().string() + "/environ");
    const std::string var = std::string(1, '\0') + "RANK=" + std::to_string(rank) + '\0';
    if (env.find(var) == std::string::npos) {
      continue;
    }
    return static_cast<pid_t>(std::stoi(name));
  }
  return std::nullopt;
}

HarnessOptions TwoSlots() {
  HarnessOptions o = TrainerOptions();
  o.cpu_slots = 2;
  return o;
}

TEST(DaemonTrainerTest, AJobOfTwoSlotsTrainsOnTwoDataParallelRanks) {
  DaemonHarness h(TwoSlots());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = Spec(*acme, 4, 2);
  spec.gpus = 2;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 240));
  ASSERT_EQ(done.status, JobStatus::kSucceeded)
      << (done.error ? done.error->message : "") << "\n"
      << ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log");
  EXPECT_EQ(done.step, 4);
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  int starts = 0, dones = 0;
  for (const auto& e : events.events) {
    if (e.type == "start") {
      ++starts;
      EXPECT_THAT(e.message, HasSubstr("2 data-parallel ranks (gloo)"));
    }
    dones += e.type == "done";
  }
  EXPECT_EQ(starts, 1);  // rank 0 alone speaks for the job
  EXPECT_EQ(dones, 1);
  EXPECT_GT(fs::file_size(done.result_adapter_path + "/adapter_model.safetensors"), 1000u);
}

TEST(DaemonTrainerTest, Kill9OfOneRankResumesTheJobOnTwoRanks) {
  DaemonHarness h(TwoSlots());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = Spec(*acme, 40, 2);
  spec.gpus = 2;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitFor(
                   *acme, job.id, [](const Job& j) { return j.latest_checkpoint.has_value(); }, 240)
                  .ok());
  const std::optional<pid_t> rank1 = RankPid(job.id, 1);
  ASSERT_TRUE(rank1.has_value()) << "no rank 1 of " << job.id;
  ASSERT_EQ(::kill(*rank1, SIGKILL), 0);
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 300));
  ASSERT_EQ(done.status, JobStatus::kSucceeded)
      << ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log");
  EXPECT_EQ(done.restarts, 1);
  EXPECT_EQ(done.step, 40);
  EXPECT_THAT(ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log"),
              HasSubstr("rank 1 was killed by signal 9"));
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  const std::vector<int64_t> starts = StartSteps(events);
  ASSERT_EQ(starts.size(), 2u) << h.log();
  EXPECT_GE(starts[1], 2);  // resumed from a checkpoint, not from step 0
}

TEST(DaemonTrainerTest, PauseAndResumeActOnEveryRankOfAJob) {
  DaemonHarness h(TwoSlots());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = Spec(*acme, 40, 5);
  spec.gpus = 2;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitFor(
                   *acme, job.id, [](const Job& j) { return j.step >= 2; }, 240)
                  .ok());
  ASSERT_OK_AND_ASSIGN(pausing, acme->PauseJob(job.id));
  ASSERT_OK_AND_ASSIGN(paused, h.WaitForStatus(*acme, job.id, JobStatus::kPaused, 120));
  ASSERT_TRUE(paused.latest_checkpoint.has_value());
  const int64_t at = paused.latest_checkpoint->step;
  // Both ranks stopped with the group (the launcher waits for them).
  EXPECT_FALSE(RankPid(job.id, 0).has_value());
  EXPECT_FALSE(RankPid(job.id, 1).has_value());
  ASSERT_OK_AND_ASSIGN(resumed, acme->ResumeJob(job.id));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 300));
  ASSERT_EQ(done.status, JobStatus::kSucceeded)
      << ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log");
  EXPECT_EQ(done.step, 40);
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  const std::vector<int64_t> starts = StartSteps(events);
  ASSERT_EQ(starts.size(), 2u) << h.log();
  EXPECT_EQ(starts[1], at);  // resumed where the pause checkpointed
}

TEST(DaemonTrainerTest, BadDataFailsValidationInTheWorker) {
  DaemonHarness h(TrainerOptions());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  absl::StatusOr<protocol::FileInfo> f = acme->UploadBytes(
      DemoData(3) + "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n", "bad.jsonl");
  ASSERT_TRUE(f.ok());
  protocol::JobSpec spec = Spec(*acme, 2, 0);
  spec.training_file = f->id;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 120));
  EXPECT_EQ(done.status, JobStatus::kFailed);
  ASSERT_TRUE(done.error.has_value());
  EXPECT_TRUE(done.error->user_error);
  EXPECT_EQ(done.error->param, "training_file");
  EXPECT_THAT(done.error->message, HasSubstr("line 4"));
}

}  // namespace
}  // namespace fjord::testing
