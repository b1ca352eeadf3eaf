// fjordd end to end: a real daemon process on loopback (CURVE) with the fake
// worker, driven through the C++ SDK (and a raw DEALER for malformed input).
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>

#include <httplib.h>
#include <atomic>
#include <filesystem>
#include <thread>
#include <zmq.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fjord::testing {
namespace {

using nlohmann::json;
using protocol::Job;
using protocol::JobStatus;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::vector<std::string> StatusHistory(Client& c, const std::string& id) {
  std::vector<std::string> out;
  absl::StatusOr<EventPage> p = c.ListEvents(id, 0, 1000);
  if (!p.ok()) return out;
  for (const auto& e : p->events) {
    if (e.type == "status") out.push_back(e.data.value("status", ""));
  }
  return out;
}

TEST(DaemonTest, SubmitRunSucceedDownloadAdapter) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 6, "step_ms": 20, "checkpoint_every": 2})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  EXPECT_EQ(job.status, JobStatus::kValidating);
  EXPECT_EQ(job.tenant, "acme");
  std::vector<std::string> types;
  ASSERT_OK_AND_ASSIGN(final_job, acme->StreamEvents(job.id, 0, [&](const protocol::JobEvent& e) {
    types.push_back(e.type);
    return true;
  }));
  ASSERT_EQ(final_job.status, JobStatus::kSucceeded) << h.log();
  EXPECT_EQ(final_job.step, 6);
  EXPECT_EQ(final_job.trained_tokens, 600);
  EXPECT_TRUE(final_job.started_at_ms.has_value());
  EXPECT_TRUE(final_job.finished_at_ms.has_value());
  EXPECT_EQ(final_job.result_adapter_path, h.storage() + "/acme/jobs/" + job.id + "/adapter");
  EXPECT_TRUE(fs::exists(final_job.result_adapter_path + "/adapter_config.json"));
  EXPECT_TRUE(fs::exists(h.storage() + "/acme/jobs/" + job.id + "/job.yaml"));
  EXPECT_TRUE(fs::exists(h.storage() + "/acme/jobs/" + job.id + "/events.jsonl"));
  EXPECT_DOUBLE_EQ(final_job.metrics.value("eval_loss", 0.0), 0.5);
  EXPECT_EQ(StatusHistory(*acme, job.id),
            (std::vector<std::string>{"validating", "queued", "running", "succeeded"}));
  EXPECT_NE(std::find(types.begin(), types.end(), "checkpoint"), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "validation"), types.end());
  ASSERT_OK_AND_ASSIGN(ckpts, acme->ListCheckpoints(job.id));
  ASSERT_FALSE(ckpts.empty());
  EXPECT_EQ(ckpts.back().step, 4);
  const std::string local = h.dir() + "/download";
  ASSERT_OK_AND_ASSIGN(files, acme->DownloadAdapter(job.id, local));
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(ReadFile(local + "/adapter_config.json"),
            ReadFile(final_job.result_adapter_path + "/adapter_config.json"));
  EXPECT_EQ(ReadFile(local + "/adapter_model.safetensors"),
            ReadFile(final_job.result_adapter_path + "/adapter_model.safetensors"));
}

TEST(DaemonTest, RetriedSubmitWithTheSameKeyGivesOneJob) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 2, "step_ms": 10})"));
  spec.idempotency_key = "retry-1";
  ASSERT_OK_AND_ASSIGN(a, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(b, acme->CreateJob(spec));
  auto other = h.Acme();  // a different connection, as after a client restart
  ASSERT_OK_AND_ASSIGN(c, other->CreateJob(spec));
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.id, c.id);
  ASSERT_OK_AND_ASSIGN(page, acme->ListJobs());
  EXPECT_EQ(page.jobs.size(), 1u);
  spec.hyperparameters.epochs = 2;
  absl::Status s = acme->CreateJob(spec).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(protocol::ParamOf(s), "idempotency_key");
  // Another tenant may use the same key.
  auto zeta = h.Zeta();
  protocol::JobSpec zspec = SpecWithData(*zeta, FakeData(R"({"steps": 2, "step_ms": 10})"));
  zspec.idempotency_key = "retry-1";
  ASSERT_OK_AND_ASSIGN(z, zeta->CreateJob(zspec));
  EXPECT_NE(z.id, a.id);
}

TEST(DaemonTest, CancelARunningJob) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 500, "step_ms": 20, "checkpoint_every": 0})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(running, h.WaitFor(*acme, job.id, [](const Job& j) {
    return j.status == JobStatus::kRunning && j.step >= 2;
  }));
  ASSERT_OK_AND_ASSIGN(cancelling, acme->CancelJob(job.id));
  EXPECT_TRUE(cancelling.status == JobStatus::kCancelling ||
              cancelling.status == JobStatus::kCancelled);
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(done.status, JobStatus::kCancelled);
  EXPECT_LT(done.step, 500);
  // The worker checkpointed on SIGTERM before it exited.
  ASSERT_OK_AND_ASSIGN(ckpts, acme->ListCheckpoints(job.id));
  EXPECT_FALSE(ckpts.empty());
  // Cancel again: a no-op. Pause a cancelled job: refused.
  EXPECT_EQ(acme->CancelJob(job.id)->status, JobStatus::kCancelled);
  absl::Status s = acme->PauseJob(job.id).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("cancelled"));
}

TEST(DaemonTest, PauseAndResumeFromTheCheckpoint) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 30, "step_ms": 30, "checkpoint_every": 0})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= 3;
               }).ok());
  ASSERT_TRUE(acme->PauseJob(job.id).ok());
  ASSERT_OK_AND_ASSIGN(paused, h.WaitForStatus(*acme, job.id, JobStatus::kPaused));
  ASSERT_TRUE(paused.latest_checkpoint.has_value());
  const int64_t at = paused.latest_checkpoint->step;
  EXPECT_GE(at, 3);
  EXPECT_EQ(acme->PauseJob(job.id)->status, JobStatus::kPaused);  // idempotent
  ASSERT_OK_AND_ASSIGN(resumed, acme->ResumeJob(job.id));
  EXPECT_TRUE(resumed.status == JobStatus::kQueued || resumed.status == JobStatus::kRunning);
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(done.status, JobStatus::kSucceeded);
  EXPECT_EQ(done.restarts, 0);
  // The second run started where the checkpoint was.
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[0], 0);
  EXPECT_EQ(starts[1], at);
  EXPECT_EQ(StatusHistory(*acme, job.id),
            (std::vector<std::string>{"validating", "queued", "running", "pausing", "paused",
                                      "queued", "running", "succeeded"}));
}

TEST(DaemonTest, Kill9OfTheDaemonMidTrainingResumesFromTheNewestCheckpoint) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string id;
  {
    auto acme = h.Acme();
    protocol::JobSpec spec =
        SpecWithData(*acme, FakeData(R"({"steps": 40, "step_ms": 25, "checkpoint_every": 4})"));
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
    id = job.id;
    ASSERT_TRUE(h.WaitFor(*acme, id, [](const Job& j) { return j.step >= 10; }).ok());
  }
  h.Kill9();
  // The worker died with the daemon (no orphan keeps writing checkpoints).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id));
  ASSERT_EQ(done.status, JobStatus::kSucceeded) << h.log();
  EXPECT_EQ(done.restarts, 1);
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(id, 0, 1000));
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_GE(starts[1],
            8);  // the newest checkpoint before the kill (every 4 steps, killed after 10)
  EXPECT_EQ(starts[1] % 4, 0);
  EXPECT_THAT(StatusHistory(*acme, id), ::testing::Contains("requeued"));
}

TEST(DaemonTest, AcceptedJobsSurviveKill9) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::vector<std::string> ids;
  {
    auto acme = h.Acme();
    protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 10})"));
    for (int i = 0; i < 5; ++i) {
      spec.idempotency_key = "k" + std::to_string(i);
      ASSERT_OK_AND_ASSIGN(j, acme->CreateJob(spec));
      ids.push_back(j.id);
    }
  }
  h.Kill9();  // right after the replies: every accepted job must be there
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  for (const std::string& id : ids) {
    ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id));
    EXPECT_EQ(done.status, JobStatus::kSucceeded) << id;
  }
}

// A temporary model directory holding only a config.json of Llama's shape
// (vocab 128256, 8 KV heads, untied): what fjordd's memory check reads.
std::string LlamaShapedModelDir(int hidden, int intermediate, int layers, int heads) {
  char tmpl[] = "/tmp/fj-model-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/config.json") << absl::StrCat(
      R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,)",
      R"( "hidden_size": )", hidden, R"(, "intermediate_size": )", intermediate,
      R"(, "num_hidden_layers": )", layers, R"(, "num_attention_heads": )", heads,
      R"(, "num_key_value_heads": 8, "tie_word_embeddings": false})");
  return dir;
}

// On a GPU node that knows its GPUs' memory (16 GB), an 8B model's bf16
// base (16.1 GB) is refused with the arithmetic; with quantization: nf4 the
// job is accepted, its job.yaml says nf4, and the job record keeps it across
// a kill -9 of the daemon (the SQLite store) until the job succeeds.
TEST(DaemonTest, QuantizationIsCheckedAgainstTheGpusAndKept) {
  const std::string model = LlamaShapedModelDir(4096, 14336, 32, 32);  // Llama-3.1-8B
  HarnessOptions o;
  o.model_dir = model;
  o.scheduler_extra = "  gpus: [0]\n  gpu_memory_gb: 16\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string id;
  {
    auto acme = h.Acme();
    protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 10})"));
    absl::Status refused = acme->CreateJob(spec).status();
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
    EXPECT_EQ(protocol::ParamOf(refused), "quantization");
    EXPECT_THAT(refused.message(),
                HasSubstr("model 'tiny' (8.0 B parameters) needs 16.1 GB for its frozen base in "
                          "bf16 alone (2 B x 8,030,261,248); this node's GPUs have 16 GB each "
                          "(14.4 GB usable after 10%"));
    EXPECT_THAT(refused.message(), HasSubstr("with quantization: nf4 it needs 5.7 GB"));
    spec.quantization = "nf4";
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
    EXPECT_EQ(job.spec.quantization, "nf4");
    EXPECT_THAT(ReadFile(h.storage() + "/acme/jobs/" + job.id + "/job.yaml"),
                HasSubstr("quantization: nf4"));
    id = job.id;
  }
  h.Kill9();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id));
  EXPECT_EQ(done.status, JobStatus::kSucceeded) << h.log();
  EXPECT_EQ(done.spec.quantization, "nf4");
  fs::remove_all(model);
}

// On a node of eight 80 GB GPUs, a 70B-shaped model's bf16 base (141.1 GB)
// does not fit on one GPU: a job of 8 GPUs without shard_base is refused,
// and the message says what sharding it over them would need (19.6 GB each);
// with shard_base (and nf4 as well) the job is accepted, its job.yaml says
// so, and the job record keeps it across a kill -9 of the daemon until the
// job succeeds.
TEST(DaemonTest, ShardBaseIsCheckedAgainstTheGpusAndKept) {
  const std::string model = LlamaShapedModelDir(8192, 28672, 80, 64);  // Llama-3.3-70B
  HarnessOptions o;
  o.model_dir = model;
  o.scheduler_extra = "  gpus: [0, 1, 2, 3, 4, 5, 6, 7]\n  gpu_memory_gb: 80\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string id;
  {
    auto acme = h.Acme();
    protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 10})"));
    spec.gpus = 8;
    absl::Status refused = acme->CreateJob(spec).status();
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
    EXPECT_EQ(protocol::ParamOf(refused), "quantization");
    EXPECT_THAT(refused.message(),
                HasSubstr("model 'tiny' (70.6 B parameters) needs 141.1 GB for its frozen base in "
                          "bf16 alone (2 B x 70,553,706,496); this node's GPUs have 80 GB each "
                          "(72 GB usable after 10%"));
    EXPECT_THAT(refused.message(),
                HasSubstr("each of the job's 8 GPUs holds the whole base (data parallel); with "
                          "quantization: nf4 it needs 39.5 GB; with shard_base over the job's 8 "
                          "GPUs it needs 19.6 GB on each"));
    spec.shard_base = true;
    spec.quantization = "nf4";  // both: sharded in 4 bits
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
    EXPECT_TRUE(job.spec.shard_base);
    EXPECT_EQ(job.spec.quantization, "nf4");
    EXPECT_EQ(job.spec.gpus, 8);
    const std::string yaml = ReadFile(h.storage() + "/acme/jobs/" + job.id + "/job.yaml");
    EXPECT_THAT(yaml, HasSubstr("shard_base: true"));
    EXPECT_THAT(yaml, HasSubstr("quantization: nf4"));
    id = job.id;
  }
  h.Kill9();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id));
  EXPECT_EQ(done.status, JobStatus::kSucceeded) << h.log();
  EXPECT_TRUE(done.spec.shard_base);
  EXPECT_EQ(done.spec.quantization, "nf4");
  EXPECT_EQ(done.spec.gpus, 8);
  fs::remove_all(model);
}

TEST(DaemonTest, Kill9OfAWorkerRequeuesAndSucceeds) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(
      *acme,
      FakeData(
          R"({"steps": 8, "step_ms": 20, "checkpoint_every": 2, "mode": "crash_once", "crash_at_step": 5})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  ASSERT_EQ(done.status, JobStatus::kSucceeded) << h.log();
  EXPECT_EQ(done.restarts, 1);
  EXPECT_EQ(StatusHistory(*acme, job.id),
            (std::vector<std::string>{"validating", "queued", "running", "requeued", "running",
                                      "succeeded"}));
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  bool said_signal = false;
  for (const auto& e : events.events)
    said_signal |= e.type == "status" && absl::StrContains(e.message, "signal 9");
  EXPECT_TRUE(said_signal);
}

TEST(DaemonTest, SilentWorkerIsKilledAndTheJobFailsAfterMaxRestarts) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(
      *acme, FakeData(R"({"steps": 8, "step_ms": 10, "mode": "hang", "crash_at_step": 2})"));
  spec.max_restarts = 1;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id, 40));
  EXPECT_EQ(done.status, JobStatus::kFailed);
  EXPECT_EQ(done.restarts, 1);
  ASSERT_TRUE(done.error.has_value());
  EXPECT_FALSE(done.error->user_error);
  EXPECT_THAT(done.error->message, HasSubstr("no heartbeat"));
}

TEST(DaemonTest, UserAndSystemFailuresAreTold) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec bad = SpecWithData(
      *acme, FakeData(R"({"steps": 5, "step_ms": 5, "mode": "fail_user", "crash_at_step": 2})"));
  ASSERT_OK_AND_ASSIGN(j1, acme->CreateJob(bad));
  protocol::JobSpec oom = SpecWithData(
      *acme, FakeData(R"({"steps": 5, "step_ms": 5, "mode": "exit3", "crash_at_step": 2})"));
  oom.max_restarts = 0;
  ASSERT_OK_AND_ASSIGN(j2, acme->CreateJob(oom));
  ASSERT_OK_AND_ASSIGN(d1, h.WaitForFinal(*acme, j1.id));
  ASSERT_OK_AND_ASSIGN(d2, h.WaitForFinal(*acme, j2.id));
  EXPECT_EQ(d1.status, JobStatus::kFailed);
  ASSERT_TRUE(d1.error.has_value());
  EXPECT_TRUE(d1.error->user_error);
  EXPECT_EQ(d1.error->code, "INVALID_ARGUMENT");
  EXPECT_THAT(d1.error->message, HasSubstr("unknown role 'robot'"));
  EXPECT_EQ(d1.restarts, 0);
  EXPECT_EQ(d2.status, JobStatus::kFailed);
  ASSERT_TRUE(d2.error.has_value());
  EXPECT_FALSE(d2.error->user_error);
  EXPECT_EQ(d2.error->code, "RESOURCE_EXHAUSTED");
  EXPECT_THAT(d2.error->message, HasSubstr("CUDA out of memory"));
}

TEST(DaemonTest, BadDataFailsValidationWithTheLine) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 2})") + "not json at all\n");
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(done.status, JobStatus::kFailed);
  ASSERT_TRUE(done.error.has_value());
  EXPECT_TRUE(done.error->user_error);
  EXPECT_EQ(done.error->param, "training_file");
  EXPECT_THAT(done.error->message, HasSubstr("line 6: not a JSON object"));
  EXPECT_FALSE(done.started_at_ms.has_value());
  // A validator that crashes on a hostile file fails the job, not the daemon:
  // validated again up to max_restarts times (it may have been the OOM
  // killer), then failed.
  protocol::JobSpec hostile = SpecWithData(*acme, FakeData(R"({"validate": "crash"})"));
  hostile.max_restarts = 1;
  ASSERT_OK_AND_ASSIGN(j2, acme->CreateJob(hostile));
  ASSERT_OK_AND_ASSIGN(d2, h.WaitForFinal(*acme, j2.id));
  EXPECT_EQ(d2.status, JobStatus::kFailed);
  EXPECT_EQ(d2.restarts, 1);
  EXPECT_FALSE(d2.error->user_error);
  EXPECT_THAT(d2.error->message, HasSubstr("signal 9"));
  EXPECT_THAT(StatusHistory(*acme, j2.id), (std::vector<std::string>{"validating", "failed"}));
  ASSERT_OK_AND_ASSIGN(ev2, acme->ListEvents(j2.id, 0, 1000));
  bool said_again = false;
  for (const auto& e : ev2.events)
    said_again |=
        e.type == "validation" && absl::StrContains(e.message, "validating again (restart 1 of 1)");
  EXPECT_TRUE(said_again);
  EXPECT_TRUE(acme->Ping().ok());
}

TEST(DaemonTest, InvalidRequestsNameTheirParam) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData("{}"));
  struct Case {
    std::function<void(protocol::JobSpec&)> edit;
    absl::StatusCode code;
    std::string param;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](protocol::JobSpec& s) { s.model = "gpt-9"; }, absl::StatusCode::kInvalidArgument, "model",
       "unknown model 'gpt-9'"},
      {[](protocol::JobSpec& s) { s.hyperparameters.learning_rate = -1; },
       absl::StatusCode::kInvalidArgument, "hyperparameters.learning_rate", "must be in (0"},
      {[](protocol::JobSpec& s) { s.training_file = "file-0000000000000000"; },
       absl::StatusCode::kInvalidArgument, "training_file", "no uploaded file"},
      {[](protocol::JobSpec& s) { s.training_file = "../zeta/files/x"; },
       absl::StatusCode::kInvalidArgument, "training_file", "'..'"},
      {[](protocol::JobSpec& s) { s.training_file = "/etc/passwd"; },
       absl::StatusCode::kInvalidArgument, "training_file", "absolute path"},
      {[](protocol::JobSpec& s) { s.validation_file = "files/../../../etc/passwd"; },
       absl::StatusCode::kInvalidArgument, "validation_file", "'..'"},
      {[](protocol::JobSpec& s) { s.heldout_file = "files/heldout.jsonl"; },
       absl::StatusCode::kInvalidArgument, "heldout_file",
       "heldout_file 'files/heldout.jsonl' does not exist"},
      {[](protocol::JobSpec& s) { s.gpus = 9; }, absl::StatusCode::kInvalidArgument, "gpus",
       "this node has 2 CPU slots"},
      {[](protocol::JobSpec& s) { s.quantization = "int4"; }, absl::StatusCode::kInvalidArgument,
       "quantization", "quantization must be none or nf4, got 'int4'"},
      {[](protocol::JobSpec& s) { s.priority = 5; }, absl::StatusCode::kPermissionDenied,
       "priority", "admin"},
      {[](protocol::JobSpec& s) { s.tenant = "zeta"; }, absl::StatusCode::kPermissionDenied,
       "tenant", "only for tenant 'acme'"},
  };
  for (const Case& c : cases) {
    protocol::JobSpec s = spec;
    c.edit(s);
    absl::Status st = acme->CreateJob(s).status();
    EXPECT_EQ(st.code(), c.code) << st;
    EXPECT_EQ(protocol::ParamOf(st), c.param) << st;
    EXPECT_THAT(st.message(), HasSubstr(c.message));
  }
  // Unknown fields and wrong types, straight through Call.
  absl::Status st =
      acme->Call("job.create",
                 json{{"model", "tiny"}, {"training_file", spec.training_file}, {"epochs", 3}})
          .status();
  EXPECT_EQ(protocol::ParamOf(st), "epochs");
  st = acme->Call("job.get", json{{"job_id", 7}}).status();
  EXPECT_EQ(protocol::ParamOf(st), "job_id");
  st = acme->Call("job.teleport", json::object()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(protocol::ParamOf(st), "command");
  st = acme->GetJob("job-nope").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  // A symlink planted in the tenant's area is refused.
  fs::create_directories(h.storage() + "/acme/data");
  fs::create_symlink(h.storage() + "/zeta", h.storage() + "/acme/data/z");
  protocol::JobSpec s = spec;
  s.training_file = "data/z/files/x";
  st = acme->CreateJob(s).status();
  EXPECT_EQ(protocol::ParamOf(st), "training_file");
  EXPECT_THAT(st.message(), HasSubstr("symbolic link"));
  EXPECT_EQ(acme->ListJobs()->jobs.size(), 0u);
}

TEST(DaemonTest, TenantsAreIsolated) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto zeta = h.Zeta();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 300, "step_ms": 20})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  // zeta sees nothing of acme's.
  for (absl::Status s : {zeta->GetJob(job.id).status(), zeta->CancelJob(job.id).status(),
                         zeta->PauseJob(job.id).status(), zeta->ListEvents(job.id).status(),
                         zeta->ListCheckpoints(job.id).status(),
                         zeta->StreamEvents(job.id, 0, [](const auto&) { return true; }).status(),
                         zeta->ListAdapterFiles(job.id).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  }
  EXPECT_TRUE(zeta->ListJobs()->jobs.empty());
  EXPECT_TRUE(zeta->ListFiles()->empty());
  EXPECT_EQ(acme->ListFiles()->size(), 1u);
  ListJobsOptions o;
  o.tenant = "acme";
  EXPECT_EQ(zeta->ListJobs(o).status().code(), absl::StatusCode::kPermissionDenied);
  protocol::JobSpec steal = spec;  // acme's file id
  EXPECT_EQ(protocol::ParamOf(zeta->CreateJob(steal).status()), "training_file");
  steal.training_file = "../acme/" + acme->ListFiles()->at(0).path;
  EXPECT_EQ(zeta->CreateJob(steal).status().code(), absl::StatusCode::kInvalidArgument);
  // The admin sees and may act on everything.
  auto admin = h.Admin();
  ASSERT_OK_AND_ASSIGN(all, admin->ListJobs());
  ASSERT_EQ(all.jobs.size(), 1u);
  EXPECT_EQ(all.jobs[0].tenant, "acme");
  EXPECT_TRUE(admin->GetJob(job.id).ok());
  ASSERT_TRUE(admin->CancelJob(job.id).ok());
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(done.status, JobStatus::kCancelled);
}

TEST(DaemonTest, UnknownKeysAndPlainClientsAreRefused) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto stranger = h.Connect(*GenerateCurveKeyPair(), 3000, 0);
  absl::Status s = stranger->Ping().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  ClientOptions o;
  o.endpoint = h.endpoint();
  o.timeout_ms = 2000;
  o.retries = 0;
  auto plain = Client::Connect(o);
  ASSERT_TRUE(plain.ok());
  s = (*plain)->Ping().status();
  EXPECT_TRUE(s.code() == absl::StatusCode::kUnauthenticated ||
              s.code() == absl::StatusCode::kDeadlineExceeded)
      << s;
  // Wrong server key: no handshake either.
  ClientOptions w;
  w.endpoint = h.endpoint();
  w.server_public_key = GenerateCurveKeyPair()->public_key;
  w.client_keys = h.acme_keys();
  w.timeout_ms = 1000;
  w.retries = 0;
  auto wrong = Client::Connect(w);
  EXPECT_FALSE((*wrong)->Ping().ok());
  // Known clients still work, also over ipc.
  EXPECT_TRUE(h.Acme()->Ping().ok());
  ASSERT_OK_AND_ASSIGN(ping, h.Connect(h.zeta_keys(), 5000, 0, h.ipc_endpoint())->Ping());
  EXPECT_EQ(ping.tenant, "zeta");
  EXPECT_EQ(ping.role, "tenant");
  EXPECT_THAT(h.log(), HasSubstr("refused an unknown CURVE client key"));
  EXPECT_THAT(h.log(), ::testing::Not(HasSubstr(h.server_keys().secret_key)));
}

// A raw CURVE DEALER sends broken messages; each gets a clear error reply and
// the daemon keeps serving.
TEST(DaemonTest, MalformedFramesGetErrorsAndTheDaemonKeepsServing) {
  HarnessOptions ho;
  ho.limits_extra =
      "  max_message_bytes: 65536\n  max_body_bytes: 16384\n  upload_chunk_bytes: 16384\n";
  DaemonHarness h(ho);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  zmq::context_t ctx;
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::curve_serverkey, h.server_keys().public_key);
  d.set(zmq::sockopt::curve_publickey, h.acme_keys().public_key);
  d.set(zmq::sockopt::curve_secretkey, h.acme_keys().secret_key);
  d.connect(h.endpoint());
  auto roundtrip = [&](const protocol::Frames& frames) -> absl::StatusOr<protocol::ServerMessage> {
    for (size_t i = 0; i < frames.size(); ++i) {
      d.send(zmq::buffer(frames[i]),
             i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    zmq::pollitem_t item{d.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(5000)) == 0)
      return absl::DeadlineExceededError("no reply");
    protocol::Frames reply;
    while (true) {
      zmq::message_t m;
      (void)d.recv(m);
      reply.push_back(m.to_string());
      if (!m.more()) break;
    }
    return protocol::DecodeServerMessage(reply);
  };
  const std::string req(1, '\x01');
  struct Case {
    protocol::Frames frames;
    std::string code, param, request_id, message;
  };
  const std::vector<Case> cases = {
      {{"", "FJD09", req, "r1", "ping", "{}"}, "INVALID_ARGUMENT", "frames", "-", "frame 1"},
      {{"FJD01", req, "r1", "ping", "{}"}, "INVALID_ARGUMENT", "frames", "-", "frame 0"},
      {{"", "FJD01", req, "r 2", "ping", "{}"}, "INVALID_ARGUMENT", "request_id", "-", "printable"},
      {{"", "FJD01", req, "r3", "no.such.command", "{}"},
       "UNIMPLEMENTED",
       "command",
       "r3",
       "unknown command"},
      {{"", "FJD01", req, "r4", "job.get", "{\"job_id\":"},
       "INVALID_ARGUMENT",
       "body",
       "r4",
       "not valid JSON"},
      {{"", "FJD01", req, "r5", "job.get", "[]"}, "INVALID_ARGUMENT", "body", "r5", "JSON object"},
      {{"", "FJD01", req, "r6", "ping", std::string(20000, ' ')},
       "RESOURCE_EXHAUSTED",
       "body",
       "r6",
       "limit 16384"},
      // Each frame under max_message_bytes, all of them over it (a single
      // frame over it is dropped by ZeroMQ with the connection, unanswered:
      // SecurityTest.OversizeMessagesAreRefusedAndTheDaemonKeepsServing).
      {{"", "FJD01", req, "r7", "file.upload.chunk", std::string(10000, ' '),
        std::string(60000, 'x')},
       "RESOURCE_EXHAUSTED",
       "message",
       "r7",
       "limit 65536"},
      {{"", "FJD01", std::string(1, '\x07')},
       "INVALID_ARGUMENT",
       "frames",
       "-",
       "unknown message type"},
      {{"", "FJD01", req, "r8", "ping", "{}", "a", "b"},
       "INVALID_ARGUMENT",
       "frames",
       "r8",
       "expected 6 or 7"},
      {{"", "FJD01", req, "r9", "job.list", "{\"limit\": 1000}"},
       "INVALID_ARGUMENT",
       "limit",
       "r9",
       "[1, 100]"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<protocol::ServerMessage> r = roundtrip(c.frames);
    ASSERT_TRUE(r.ok()) << r.status() << " for " << c.message;
    EXPECT_EQ(r->status, c.code) << c.message;
    EXPECT_EQ(r->request_id, c.request_id) << c.message;
    absl::Status s = protocol::StatusFromReply(r->status, r->body);
    EXPECT_EQ(protocol::ParamOf(s), c.param) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
    // Still serving, on the same connection and on others.
    absl::StatusOr<protocol::ServerMessage> ok = roundtrip({"", "FJD01", req, "p", "ping", "{}"});
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(ok->status, "OK");
  }
  EXPECT_TRUE(h.Zeta()->Ping().ok());
  // An oversize upload is refused by size before any byte is sent.
  absl::Status up = h.Acme()
                        ->Call("file.upload.begin", json{{"filename", "big.jsonl"},
                                                         {"bytes", int64_t{1} << 40},
                                                         {"sha256", std::string(64, 'a')}})
                        .status();
  EXPECT_EQ(up.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(protocol::ParamOf(up), "bytes");
  // A wrong checksum drops the upload.
  auto acme = h.Acme();
  absl::StatusOr<protocol::ServerMessage> begin =
      acme->Call("file.upload.begin",
                 json{{"filename", "t.jsonl"}, {"bytes", 3}, {"sha256", std::string(64, '0')}});
  ASSERT_TRUE(begin.ok());
  const std::string upl = begin->body["upload_id"];
  ASSERT_TRUE(
      acme->Call("file.upload.chunk", json{{"upload_id", upl}, {"offset", 0}}, std::string("abc"))
          .ok());
  absl::Status fin = acme->Call("file.upload.finish", json{{"upload_id", upl}}).status();
  EXPECT_EQ(protocol::ParamOf(fin), "sha256");
  EXPECT_TRUE(acme->ListFiles()->empty());
  EXPECT_EQ(acme->Call("file.upload.begin",
                       json{{"filename", "../x"}, {"bytes", 3}, {"sha256", std::string(64, '0')}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DaemonTest, QueueLimitsPrioritiesAndPositions) {
  HarnessOptions ho;
  ho.cpu_slots = 1;
  ho.scheduler_extra = "  max_queued_per_tenant: 3\n";
  DaemonHarness h(ho);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 400, "step_ms": 20})"));
  ASSERT_OK_AND_ASSIGN(first, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitForStatus(*acme, first.id, JobStatus::kRunning).ok());
  ASSERT_OK_AND_ASSIGN(second, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(third, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(q2, h.WaitForStatus(*acme, second.id, JobStatus::kQueued));
  ASSERT_OK_AND_ASSIGN(q3, h.WaitForStatus(*acme, third.id, JobStatus::kQueued));
  ASSERT_TRUE(q2.queue_position.has_value());
  EXPECT_EQ(*h.Acme()->GetJob(second.id)->queue_position, 1);
  EXPECT_EQ(*h.Acme()->GetJob(third.id)->queue_position, 2);
  // An admin's urgent job goes ahead of both.
  auto admin = h.Admin();
  protocol::JobSpec urgent = SpecWithData(*admin, FakeData(R"({"steps": 2, "step_ms": 10})"));
  urgent.priority = 5;
  ASSERT_OK_AND_ASSIGN(u, admin->CreateJob(urgent));
  ASSERT_TRUE(
      h.WaitFor(*admin, u.id, [](const Job& j) { return j.queue_position.value_or(0) == 1; }).ok());
  EXPECT_EQ(*acme->GetJob(second.id)->queue_position, 2);
  // The fourth waiting job is over acme's limit of 3.
  ASSERT_OK_AND_ASSIGN(fourth, acme->CreateJob(spec));
  absl::Status s = acme->CreateJob(spec).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(protocol::ParamOf(s), "tenant");
  for (const std::string& id : {first.id, second.id, third.id, fourth.id})
    ASSERT_TRUE(acme->CancelJob(id).ok());
  ASSERT_OK_AND_ASSIGN(ud, h.WaitForFinal(*admin, u.id));
  EXPECT_EQ(ud.status, JobStatus::kSucceeded);
}

TEST(DaemonTest, GracefulShutdownRequeuesAndResumes) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string id;
  {
    auto acme = h.Acme();
    protocol::JobSpec spec =
        SpecWithData(*acme, FakeData(R"({"steps": 30, "step_ms": 30, "checkpoint_every": 0})"));
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
    id = job.id;
    ASSERT_TRUE(h.WaitFor(*acme, id, [](const Job& j) { return j.step >= 3; }).ok());
  }
  daemon::WorkerExit e = h.Terminate();
  EXPECT_EQ(e.exit_code, 0) << e.Describe() << h.log();
  EXPECT_THAT(h.log(), HasSubstr("fjordd stopped"));
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, id));
  EXPECT_EQ(done.status, JobStatus::kSucceeded);
  EXPECT_EQ(done.restarts, 0);  // a clean shutdown is not a failure
  std::vector<std::string> hist = StatusHistory(*acme, id);
  EXPECT_THAT(hist, ::testing::Contains("requeued"));
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(id, 0, 1000));
  int starts = 0;
  int64_t resumed_at = -1;
  for (const auto& ev : events.events) {
    if (ev.type == "start" && ++starts == 2) resumed_at = ev.data.value("step", int64_t{-1});
  }
  EXPECT_GE(resumed_at, 3);
}

TEST(DaemonTest, MetricsOverHttp) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 5})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
  httplib::Client c("127.0.0.1", h.metrics_port());
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->body, HasSubstr("fjord_jobs_finished_total{status=\"succeeded\"} 1"));
  EXPECT_THAT(res->body, HasSubstr("fjord_tokens_trained_total 300"));
  EXPECT_THAT(res->body, HasSubstr("fjord_request_duration_seconds_bucket{command=\"job.create\""));
  EXPECT_THAT(res->body, HasSubstr("fjord_queue_depth"));
  EXPECT_THAT(res->body, HasSubstr("fjord_running_jobs"));
}

TEST(DaemonTest, CheckConfigAndKeygen) {
  DaemonHarness h;
  const std::string fjordd = fs::absolute("daemon/server/fjordd").string();
  daemon::WorkerSpec spec;
  spec.program = fjordd;
  spec.args = {"--config", h.config_path(), "--check-config"};
  spec.log_path = h.dir() + "/check.log";
  fs::create_directories(h.dir() + "/state");
  auto p = daemon::WorkerProcess::Start(spec);
  ASSERT_TRUE(p.ok());
  auto e = (*p)->Wait(20000);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->exit_code, 0) << ReadFile(spec.log_path);
  ::chmod((h.dir() + "/keys/server.key").c_str(), 0644);
  spec.log_path = h.dir() + "/check2.log";
  p = daemon::WorkerProcess::Start(spec);
  e = (*p)->Wait(20000);
  EXPECT_EQ(e->exit_code, 2);
  EXPECT_THAT(ReadFile(spec.log_path), HasSubstr("chmod 600"));
  EXPECT_THAT(ReadFile(spec.log_path), ::testing::Not(HasSubstr(h.server_keys().secret_key)));
  spec.args = {"--keygen", h.dir() + "/newkey"};
  spec.log_path = h.dir() + "/keygen.log";
  p = daemon::WorkerProcess::Start(spec);
  e = (*p)->Wait(20000);
  EXPECT_EQ(e->exit_code, 0);
  EXPECT_TRUE(LoadCurveSecretKeyFile(h.dir() + "/newkey.key").ok());
}

// As root, workers run as the configured unprivileged user and can still
// read the tenant's files and write checkpoints and the adapter.
TEST(DaemonTest, WorkersRunAsTheConfiguredUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody'";
  HarnessOptions ho;
  ho.worker_extra = "  user: nobody\n";
  WorkerForOtherUsers worker;
  ho.worker_program = worker.program();
  DaemonHarness h(ho);
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 4, "step_ms": 10, "checkpoint_every": 2})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  ASSERT_EQ(done.status, JobStatus::kSucceeded)
      << h.log() << ReadFile(h.storage() + "/acme/jobs/" + job.id + "/worker.log");
  struct stat st {};
  ASSERT_EQ(::stat((done.result_adapter_path + "/adapter_config.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody->pw_uid);
}

// Bounded load on loopback: 100 clients x 100 requests, no errors.
TEST(DaemonTest, LoadHundredClientsTimesHundredRequests) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string job_id;
  {
    auto acme = h.Acme();
    protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 2, "step_ms": 5})"));
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
    job_id = job.id;
  }
  std::atomic<int> errors{0}, ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 100; ++t) {
    threads.emplace_back([&, t] {
      auto c = h.Connect(t % 2 ? h.acme_keys() : h.zeta_keys(), 20000, 0);
      for (int i = 0; i < 100; ++i) {
        absl::Status s = (i % 3 == 0) ? c->Ping().status()
                         : (i % 3 == 1)
                             ? c->ListJobs().status()
                             : (t % 2 ? c->GetJob(job_id).status() : c->ListFiles().status());
        (s.ok() ? ok : errors)++;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(ok.load(), 10000);
}

}  // namespace
}  // namespace fjord::testing
