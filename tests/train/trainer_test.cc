// RunTraining with LoRA (lora::LoraMethod) on the demo model and data
// (tools/demo: a tiny Llama pretrained at build time), on CPU:
//   - k micro-batches accumulate to the gradient of one k-times larger batch;
//   - a run stopped at a checkpoint and resumed ends with an adapter bitwise
//     identical to an uninterrupted run, also when the newest checkpoint is
//     torn (skipped with a warning);
//   - stop requests, keep-last-K, metrics events (the held-out answer
//     accuracy before and after training), setup errors.
#include "runtime/train/trainer.h"

#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "lora/job_config.h"
#include "lora/lora_method.h"
#include "runtime/io/safetensors.h"
#include "runtime/kernels/ops.h"
#include "runtime/train/checkpoint.h"

namespace fjord::train {
namespace {

namespace fs = std::filesystem;
using lora::JobConfig;  // RunTraining's TrainingConfig plus the LoRA settings
using ::testing::HasSubstr;

std::string Demo() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return std::string(srcdir ? srcdir : ".") + "/" + (workspace ? workspace : "fjord") +
         "/tools/demo/out";
}

std::string TempDir() {
  std::string tmpl = ::testing::TempDir() + "/train_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

// A small job on the demo: 128-token rows, r 4, no eval unless asked.
JobConfig Job(const std::string& out) {
  JobConfig c;
  c.model.path = Demo() + "/model";
  c.data.train = Demo() + "/data/train.jsonl";
  c.data.max_length = 128;
  c.lora.r = 4;
  c.lora.alpha = 8;
  c.lora.dropout = 0.1;
  c.training.max_steps = 6;
  c.training.micro_batch_size = 2;
  c.training.learning_rate = 1e-3;
  c.training.warmup_steps = 2;
  c.training.device = "cpu";
  // One thread: tests share two cores with other tests, and OpenMP's
  // spin-waiting threads slow down 10x when oversubscribed.
  c.training.threads = 1;
  c.checkpoint.every_steps = 2;
  c.checkpoint.keep_last = 5;
  c.output.dir = out;
  return c;
}

struct TrainRun {
  absl::StatusOr<TrainResult> result;
  std::vector<TrainEvent> events;
};

TrainRun Train(const JobConfig& job, TrainOptions options = {}) {
  lora::LoraMethod method(job);
  options.adapter = &method;
  TrainRun run;
  options.on_event = [&](const TrainEvent& e) { run.events.push_back(e); };
  run.result = RunTraining(job, options);
  return run;
}

std::string Bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(TrainerTest, AccumulatedMicroBatchesEqualOneLargerBatch) {
  // Unpacked, unshuffled rows: micro-batches of 1 x 4 see the same examples
  // as one batch of 4 (and as 2 x 2), with different trained tokens each, so
  // a per-micro-batch mean would give other gradients.
  std::vector<std::map<int64_t, std::vector<torch::Tensor>>> grads;  // per config: step -> grads
  std::vector<double> losses;
  for (auto [rows, accum] : {std::pair{4, 1}, {1, 4}, {2, 2}}) {
    JobConfig job = Job(TempDir());
    job.data.packing = false;
    job.data.shuffle = false;
    job.lora.dropout = 0;
    job.training.max_steps = 2;
    job.training.micro_batch_size = rows;
    job.training.gradient_accumulation_steps = accum;
    job.checkpoint.every_steps = 0;
    TrainOptions options;
    std::map<int64_t, std::vector<torch::Tensor>> g;
    options.on_gradients = [&](int64_t step,
                               const std::vector<std::pair<std::string, torch::Tensor>>& params) {
      for (const auto& [name, p] : params) g[step].push_back(p.grad().clone());
    };
    TrainRun run = Train(job, options);
    ASSERT_TRUE(run.result.ok()) << run.result.status();
    grads.push_back(g);
    for (const TrainEvent& e : run.events) {
      if (e.type == TrainEvent::Type::kStep && e.step == 1) losses.push_back(e.loss);
    }
  }
  ASSERT_EQ(grads[0][0].size(), 56u);                       // 4 layers x 7 linears x (A, B)
  EXPECT_GT(grads[0][0][1].abs().max().item<double>(), 0);  // q_proj's B at step 0
  for (size_t k = 1; k < grads.size(); ++k) {
    // Step 0 from the same initial adapter: equal to float rounding. Step 1
    // (B non-zero, so A's gradients too) after one identical-but-for-rounding
    // update: a little looser.
    for (auto [step, rtol] : {std::pair{int64_t{0}, 1e-4}, {int64_t{1}, 2e-3}}) {
      ASSERT_EQ(grads[k][step].size(), grads[0][step].size());
      for (size_t i = 0; i < grads[0][step].size(); ++i) {
        const torch::Tensor& want = grads[0][step][i];
        const torch::Tensor& got = grads[k][step][i];
        const double scale = want.abs().max().item<double>();
        EXPECT_LE((got - want).abs().max().item<double>(), rtol * scale + 1e-9)
            << "step " << step << ", parameter " << i << ", configuration " << k;
      }
    }
    EXPECT_NEAR(losses[k], losses[0], 1e-5 * losses[0]);
  }
}

TEST(TrainerTest, ResumedRunEqualsUninterruptedBitForBit) {
  const std::string a = TempDir(), b = TempDir();
  TrainRun full = Train(Job(a));
  ASSERT_TRUE(full.result.ok()) << full.result.status();
  EXPECT_EQ(full.result->steps, 6);
  EXPECT_EQ(full.result->resumed_from_step, -1);

  TrainOptions stop;
  stop.stop_after_steps = 3;
  TrainRun first = Train(Job(b), stop);
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  EXPECT_TRUE(first.result->stopped);
  EXPECT_EQ(first.result->steps, 3);
  EXPECT_EQ(first.result->last_checkpoint, b + "/checkpoints/step-00000003");
  EXPECT_FALSE(fs::exists(b + "/adapter"));
  TrainRun second = Train(Job(b));
  ASSERT_TRUE(second.result.ok()) << second.result.status();
  EXPECT_EQ(second.result->resumed_from_step, 3);
  EXPECT_EQ(second.result->steps, 6);

  const std::string wa = Bytes(a + "/adapter/adapter_model.safetensors");
  ASSERT_GT(wa.size(), 1000u);
  EXPECT_TRUE(wa == Bytes(b + "/adapter/adapter_model.safetensors"))
      << "adapter weights differ after resume";
  EXPECT_EQ(Bytes(a + "/adapter/adapter_config.json"), Bytes(b + "/adapter/adapter_config.json"));
  // The adapter trained: B moved away from zero.
  auto f = io::SafetensorsFile::Open(a + "/adapter/adapter_model.safetensors");
  ASSERT_TRUE(f.ok());
  EXPECT_GT((*f)->Get("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
                ->abs()
                .max()
                .item<double>(),
            0);

  // Metrics of the uninterrupted run.
  int steps = 0;
  for (const TrainEvent& e : full.events) {
    if (e.type != TrainEvent::Type::kStep) continue;
    ++steps;
    EXPECT_GT(e.loss, 0);
    EXPECT_GT(e.grad_norm, 0);
    EXPECT_GT(e.tokens_per_s, 0);
    EXPECT_GT(e.peak_memory_bytes, 10 << 20);
    EXPECT_GT(e.trained_tokens, 0);
    EXPECT_EQ(e.total_steps, 6);
    if (e.step == 1) {
      EXPECT_DOUBLE_EQ(e.lr, 0.5e-3);  // warmup 2: (0 + 1) / 2 of the peak
    }
    if (e.step == 2) {
      EXPECT_DOUBLE_EQ(e.lr, 1e-3);
    }
  }
  EXPECT_EQ(steps, 6);
  // Checkpoints at 2, 4, 6 with everything a resume needs.
  const std::vector<FoundCheckpoint> cps = ListCheckpoints(a + "/checkpoints");
  ASSERT_EQ(cps.size(), 3u);
  for (const char* file :
       {"adapter/adapter_config.json", "adapter/adapter_model.safetensors",
        "training_state.safetensors", "trainer_state.json", "config.yaml", "MANIFEST.json"}) {
    EXPECT_TRUE(fs::exists(cps[1].dir + "/" + file)) << file;
  }
  auto state = io::SafetensorsFile::Open(cps[1].dir + "/training_state.safetensors");
  ASSERT_TRUE(state.ok());
  EXPECT_NE((*state)->Find("rng.cpu"), nullptr);
  EXPECT_NE((*state)->Find("optimizer.step"), nullptr);
  EXPECT_NE((*state)->Find("optimizer.model.layers.3.mlp.down_proj.lora_B.weight.exp_avg_sq"),
            nullptr);
  EXPECT_THAT(Bytes(cps[1].dir + "/trainer_state.json"), HasSubstr("\"schedule\""));
}

TEST(TrainerTest, TornNewestCheckpointIsSkippedWithAWarning) {
  const std::string a = TempDir(), b = TempDir();
  TrainRun full = Train(Job(a));
  ASSERT_TRUE(full.result.ok()) << full.result.status();
  TrainOptions stop;
  stop.stop_after_steps = 4;
  TrainRun first = Train(Job(b), stop);
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  ASSERT_TRUE(first.result->stopped);
  // Tear step 4: a byte of its optimizer state flipped.
  const std::string torn = b + "/checkpoints/step-00000004/training_state.safetensors";
  std::string bytes = Bytes(torn);
  bytes[bytes.size() / 2] ^= 0x5a;
  std::ofstream(torn, std::ios::binary | std::ios::trunc) << bytes;

  TrainRun second = Train(Job(b));
  ASSERT_TRUE(second.result.ok()) << second.result.status();
  EXPECT_EQ(second.result->resumed_from_step, 2);
  bool warned = false;
  for (const TrainEvent& e : second.events) {
    if (e.type == TrainEvent::Type::kLog &&
        absl::StrContains(e.message, "warning: skipping invalid checkpoint") &&
        absl::StrContains(e.message, "step-00000004") &&
        absl::StrContains(e.message, "SHA-256 does not match")) {
      warned = true;
    }
  }
  EXPECT_TRUE(warned);
  EXPECT_TRUE(Bytes(a + "/adapter/adapter_model.safetensors") ==
              Bytes(b + "/adapter/adapter_model.safetensors"));
}

TEST(TrainerTest, StopRequestCheckpointsFirstAndKeepLastPrunes) {
  const std::string out = TempDir();
  JobConfig job = Job(out);
  job.checkpoint.every_steps = 1;
  job.checkpoint.keep_last = 2;
  std::atomic<bool> stop{false};
  lora::LoraMethod method(job);
  TrainOptions options;
  options.adapter = &method;
  options.stop_requested = &stop;
  options.on_event = [&](const TrainEvent& e) {
    if (e.type == TrainEvent::Type::kStep && e.step == 4) stop.store(true);  // e.g. SIGTERM
  };
  absl::StatusOr<TrainResult> r = RunTraining(job, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stopped);
  EXPECT_EQ(r->steps, 4);
  const std::vector<FoundCheckpoint> cps = ListCheckpoints(out + "/checkpoints");
  ASSERT_EQ(cps.size(), 2u);
  EXPECT_EQ(cps[0].step, 3);
  EXPECT_EQ(cps[1].step, 4);
  EXPECT_TRUE(VerifyCheckpoint(cps[1].dir).ok());
}

TEST(TrainerTest, EvaluatesEveryNStepsAndAtTheEnd) {
  JobConfig job = Job(TempDir());
  job.data.validation = Demo() + "/data/valid.jsonl";
  job.eval.every_steps = 2;
  job.training.max_steps = 4;
  job.checkpoint.every_steps = 0;
  TrainRun run = Train(job);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  std::vector<int64_t> at;
  for (const TrainEvent& e : run.events) {
    if (e.type != TrainEvent::Type::kEval) continue;
    at.push_back(e.step);
    EXPECT_GT(e.eval_loss, 0);
    EXPECT_GE(e.eval_token_accuracy, 0);
    EXPECT_LE(e.eval_token_accuracy, 1);
    EXPECT_EQ(e.heldout_accuracy, -1);  // no held-out prompts
  }
  EXPECT_EQ(at, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_GT(run.result->initial_eval_loss, 0);
  EXPECT_GT(run.result->final_eval_loss, 0);
}

// The held-out answer accuracy before training travels in the step-0 eval
// event (with the validation loss), the one after in done; the other eval
// events carry none (-1). Without validation data the step-0 eval event has
// the held-out accuracy alone (eval_loss -1).
TEST(TrainerTest, HeldoutAccuracyBeforeTrainingIsInTheStepZeroEvalEvent) {
  const std::string dir = TempDir();
  const std::string heldout = dir + "/heldout.jsonl";
  {
    std::ifstream in(Demo() + "/data/heldout.jsonl");
    std::ofstream out(heldout);
    std::string line;
    for (int i = 0; i < 3 && std::getline(in, line); ++i)
      out << line << "\n";  // 3 questions: quick
  }
  JobConfig job = Job(dir + "/out");
  job.data.validation = Demo() + "/data/valid.jsonl";
  job.eval.heldout = heldout;
  job.eval.max_new_tokens = 8;
  job.eval.every_steps = 1;
  job.training.max_steps = 2;
  job.checkpoint.every_steps = 0;
  TrainRun run = Train(job);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  std::vector<const TrainEvent*> evals;
  const TrainEvent* done = nullptr;
  for (const TrainEvent& e : run.events) {
    if (e.type == TrainEvent::Type::kEval) evals.push_back(&e);
    if (e.type == TrainEvent::Type::kDone) done = &e;
  }
  ASSERT_EQ(evals.size(), 3u);  // steps 0, 1 and the end
  EXPECT_EQ(evals[0]->step, 0);
  EXPECT_GT(evals[0]->eval_loss, 0);
  EXPECT_GE(evals[0]->heldout_accuracy, 0);
  EXPECT_LE(evals[0]->heldout_accuracy, 1);
  EXPECT_EQ(evals[0]->heldout_accuracy, run.result->initial_heldout_accuracy);
  EXPECT_EQ(evals[1]->heldout_accuracy, -1);
  EXPECT_EQ(evals[2]->heldout_accuracy, -1);
  ASSERT_NE(done, nullptr);
  EXPECT_GE(done->heldout_accuracy, 0);
  EXPECT_EQ(done->heldout_accuracy, run.result->final_heldout_accuracy);

  JobConfig no_validation = Job(dir + "/out2");
  no_validation.eval.heldout = heldout;
  no_validation.eval.max_new_tokens = 8;
  no_validation.training.max_steps = 1;
  no_validation.checkpoint.every_steps = 0;
  run = Train(no_validation);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  evals.clear();
  for (const TrainEvent& e : run.events) {
    if (e.type == TrainEvent::Type::kEval) evals.push_back(&e);
  }
  ASSERT_EQ(evals.size(), 1u);
  EXPECT_EQ(evals[0]->step, 0);
  EXPECT_EQ(evals[0]->eval_loss, -1);
  EXPECT_EQ(evals[0]->eval_token_accuracy, -1);
  EXPECT_EQ(evals[0]->heldout_accuracy, run.result->initial_heldout_accuracy);
  EXPECT_GE(evals[0]->heldout_accuracy, 0);
  EXPECT_EQ(run.result->initial_eval_loss, -1);

  // A malformed held-out file is refused before training, naming the line.
  std::ofstream(heldout, std::ios::app) << "{\"prompt\": \"x?\"}\n";
  no_validation.output.dir = dir + "/out3";
  run = Train(no_validation);
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(run.result.status().message()),
              HasSubstr("line 4 (answer): missing field 'answer'"));
}

// trainer.h's contract: the process-wide settings only with set_process_wide
// (the default), checked on the calling thread; config.yaml records
// TrainingConfig::ToYaml unless TrainOptions::config_yaml is given.
TEST(TrainerTest, ProcessWideSettingsOnlyWhenAsked) {
  auto flushes_subnormals = [] {
    volatile float tiny = 1e-40f;  // subnormal
    volatile float y = tiny * 1.0f;
    return y == 0.0f;
  };
  const int threads_before = torch::get_num_threads();
  at::globalContext().setFlushDenormal(false);
  kernels::SetBackend(kernels::Backend::kReference);

  JobConfig job = Job(TempDir());
  job.training.max_steps = 1;
  job.training.threads = 0;
  job.checkpoint.every_steps = 0;
  TrainOptions keep;
  keep.set_process_wide = false;
  TrainRun run = Train(job, keep);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(torch::get_num_threads(), threads_before);
  EXPECT_FALSE(flushes_subnormals());
  EXPECT_EQ(kernels::GetBackend(), kernels::Backend::kReference);
  // The checkpoint's config.yaml: the training config (no lora section).
  const std::vector<FoundCheckpoint> cps = ListCheckpoints(job.output.dir + "/checkpoints");
  ASSERT_EQ(cps.size(), 1u);
  absl::StatusOr<TrainingConfig> recorded =
      ParseTrainingConfig(Bytes(cps[0].dir + "/config.yaml"), "config.yaml");
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(recorded->output.dir, job.output.dir);

  // Asking for a process-wide setting without set_process_wide is refused.
  job = Job(TempDir());
  job.training.threads = 1;
  run = Train(job, keep);
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(run.result.status().message(), HasSubstr("set_process_wide"));

  // The default: set (kernels auto; flush-to-zero on CPU); the whole job in config.yaml.
  job = Job(TempDir());
  job.training.max_steps = 1;
  job.checkpoint.every_steps = 0;
  TrainOptions defaults;
  defaults.config_yaml = job.ToYaml();
  run = Train(job, defaults);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_TRUE(flushes_subnormals());
  EXPECT_EQ(kernels::GetBackend(), kernels::Backend::kAuto);
  absl::StatusOr<JobConfig> whole = lora::ParseJobConfig(
      Bytes(job.output.dir + "/checkpoints/step-00000001/config.yaml"), "config.yaml");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->lora.r, 4);
  at::globalContext().setFlushDenormal(false);
}

// A config built in code is checked as a YAML file would be.
TEST(TrainerTest, InvalidConfigIsRefusedBeforeSetup) {
  JobConfig job = Job(TempDir());
  job.training.micro_batch_size = 0;
  TrainRun run = Train(job);
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(run.result.status().message(),
              HasSubstr("training config: field 'training.micro_batch_size': 0 is out of range"));
  job = Job("");
  run = Train(job);
  EXPECT_THAT(run.result.status().message(), HasSubstr("field 'output.dir' is required"));
}

TEST(TrainerTest, SetupErrorsAreSpecific) {
  JobConfig job = Job(TempDir());
  job.lora.target_modules = {"c_attn"};
  TrainRun run = Train(job);
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(run.result.status().message(),
              HasSubstr("lora: target_modules [c_attn] matched no linear layer"));

  job = Job(TempDir());
  job.model.path = "/nonexistent/model";
  run = Train(job);
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(run.result.status().message(), HasSubstr("/nonexistent/model/config.json"));

  job = Job(TempDir());
  job.training.device = "cuda";
  if (!torch::cuda::is_available()) {
    run = Train(job);
    EXPECT_EQ(run.result.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace fjord::train
