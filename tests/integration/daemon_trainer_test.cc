// fjordd with the real trainer: fjord-train (lora/cli) on the demo model
// (tools/demo, a tiny Llama) and its data, CPU training, a few steps. The
// job's adapter is a PEFT adapter on the storage root; kill -9 of the daemon
// mid-training resumes from the newest checkpoint; bad data fails
// validation in the worker.
#include <filesystem>

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
  o.worker_extra = "  args: [\"--set\", \"training.device=cpu\", \"--set\", \"training.threads=1\"]\n";
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
  EXPECT_EQ(ReadFile(h.dir() + "/dl/adapter_model.safetensors"), ReadFile(adapter + "/adapter_model.safetensors"));
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
    ASSERT_TRUE(h.WaitFor(*acme, id, [](const Job& j) { return j.latest_checkpoint.has_value(); }, 240).ok());
  }
  h.Kill9();
  h.Start();
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id, 300));
  ASSERT_EQ(done.status, JobStatus::kSucceeded) << ReadFile(h.storage() + "/acme/jobs/" + id + "/worker.log");
  EXPECT_EQ(done.restarts, 1);
  EXPECT_EQ(done.step, 60);
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(id, 0, 1000));
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  ASSERT_EQ(starts.size(), 2u) << h.log();
  EXPECT_GE(starts[1], 2);  // resumed from a checkpoint, not from step 0
}

TEST(DaemonTrainerTest, BadDataFailsValidationInTheWorker) {
  DaemonHarness h(TrainerOptions());
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  absl::StatusOr<protocol::FileInfo> f =
      acme->UploadBytes(DemoData(3) + "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n", "bad.jsonl");
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
