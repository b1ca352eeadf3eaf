// The trainer: one parameter-efficient fine-tuning job, in-process, from a
// TrainingConfig (training_config.h) and an AdapterMethod (adapter_method.h;
// lora::LoraMethod for LoRA).
//
// RunTraining reads top to bottom (trainer.cc): setup (device, model, adapters,
// tokenizer, data, optimizer, resume), the loop (accumulate micro-batches,
// loss normalised by the trained tokens of the whole accumulated batch, clip,
// step, schedule, evaluate, checkpoint), then the final adapter.
//
// What RunTraining does to the process (docs/embedding.md). With
// TrainOptions::set_process_wide true (the default) it sets, for the whole
// process and for good (nothing is restored on return):
//   - LibTorch's intra-op thread count, torch::set_num_threads(training.threads),
//     when training.threads > 0;
//   - on CPU, flush-to-zero for subnormal floats
//     (at::globalContext().setFlushDenormal(true)): on the calling thread
//     and the threads started after it (LibTorch's pool, if not yet started);
//   - the fused-kernel policy, kernels::SetBackend(training.kernels)
//     (runtime/kernels/ops.h), which every model in the process follows;
//   - on CUDA unless training.kernels is "reference": kernels::RunKernelSelfTest,
//     which marks each fused kernel passed or disabled for the process (it
//     synchronises the device).
// With set_process_wide false it sets none of these (the caller's choices
// stand; on a GPU the fused kernels then run under Backend::kAuto only if
// the caller ran RunKernelSelfTest), and training.threads and
// training.kernels must be left at 0 and "auto".
// Always:
//   - LibTorch's default generators (CPU, and CUDA on a GPU) are seeded with
//     torch::manual_seed(training.seed), restored from the checkpoint on
//     resume, and drawn from by dropout: other users of the default
//     generators during a run change its dropout masks (and make it
//     unreproducible);
//   - on a GPU it trains on cuda:0 (pick the GPU with CUDA_VISIBLE_DEVICES);
//   - it reads model.path and the data files and writes only under
//     output.dir (created if missing).
// It sets no environment variables, installs no signal handlers (fjord-train
// installs its own and sets stop_requested), and starts no threads of its
// own (LibTorch's pool aside). It runs on the calling thread; two runs at
// once in one process are not supported (they share all of the above).
#ifndef FJORD_RUNTIME_TRAIN_TRAINER_H_
#define FJORD_RUNTIME_TRAIN_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/train/adapter_method.h"
#include "runtime/train/training_config.h"
#include "runtime/util/env.h"

namespace fjord::dist {
class World;
}  // namespace fjord::dist

namespace fjord::train {

// What the trainer reports as it goes. Fields not meaningful for a type are 0
// (heldout_accuracy: -1).
//
// kEval: eval_loss and eval_token_accuracy over the validation data (-1 when
// the job has none), and heldout_accuracy, the greedy-answer accuracy on
// eval.heldout, in the evaluation at step 0 only (the base model's, measured
// before training; -1 otherwise). A fresh run (not a resume) with validation
// data or held-out prompts starts with that step-0 eval event; the held-out
// accuracy after training is in kDone.
struct TrainEvent {
  enum class Type { kStart, kStep, kEval, kCheckpoint, kLog, kDone };
  Type type = Type::kLog;
  int64_t step = 0;  // optimizer steps done
  int64_t total_steps = 0;
  int64_t epoch = 0;
  double loss = 0;  // mean CE per trained token over the step
  double lr = 0;
  double grad_norm = 0;     // before clipping
  double tokens_per_s = 0;  // non-padding tokens per second of training steps since (re)start
                            // (evaluation and checkpoint time excluded)
  double eta_s = 0;
  int64_t trained_tokens = 0;      // cumulative targets that carried loss
  int64_t peak_memory_bytes = 0;   // peak GPU memory on CUDA, peak RSS on CPU
  double eval_loss = 0;            // kEval (-1: no validation data); kDone: final (-1: none)
  double eval_token_accuracy = 0;  // kEval, 0..1 (-1: no validation data)
  double heldout_accuracy = -1;  // kEval at step 0: before training; kDone: after; -1: not measured
  std::string message;           // kLog: text; kCheckpoint/kDone: a path
  // Preference methods (training.method dpo | orpo | simpo), on kStep and
  // kEval: TRL's metric names and values (kStep: "rewards/chosen",
  // "rewards/rejected", "rewards/accuracies", "rewards/margins",
  // "logps/chosen", "logps/rejected", ORPO's "nll_loss", "log_odds_ratio",
  // "log_odds_chosen"; kEval: the same with "eval_" in front). Then
  // `loss` is the step's preference loss and eval_loss the mean over the
  // validation pairs (eval_token_accuracy -1). Empty for sft.
  std::vector<std::pair<std::string, double>> metrics;
};

const char* EventTypeName(TrainEvent::Type type);

struct TrainOptions {
  // The parameter-efficient method to train (lora::LoraMethod); required.
  AdapterMethod* adapter = nullptr;
  std::function<void(const TrainEvent&)> on_event;  // may be empty
  // When it becomes true the trainer writes a checkpoint after the current
  // step and returns with TrainResult::stopped set (cancel/pause).
  const std::atomic<bool>* stop_requested = nullptr;
  // Default true: continue from the newest valid checkpoint under
  // <output.dir>/checkpoints if there is one.
  bool resume = true;
  // Tests: stop (as if asked) once this many steps are done; 0: never.
  int64_t stop_after_steps = 0;
  // Default true: RunTraining sets the process-wide state listed at the top
  // of this file; false: it leaves it to the caller.
  bool set_process_wide = true;
  // What config.yaml in each checkpoint records; default empty:
  // config.ToYaml(). fjord-train passes the whole job (lora::JobConfig::ToYaml).
  std::string config_yaml;
  // The checkpoints (listing, verifying, writing, rotating) and the adapter
  // saved and loaded in them go through this Env (runtime/util/env.h), so a
  // test can inject storage faults. Default null: Env::Default().
  Env* env = nullptr;
  // Called at every optimizer step (0-based), after the accumulated
  // backward and before clipping, with the trainable parameters (their
  // .grad() is the step's gradient). For inspection; may be empty.
  std::function<void(int64_t step,
                     const std::vector<std::pair<std::string, torch::Tensor>>& params)>
      on_gradients;
  // Data-parallel training (runtime/dist/world.h): every rank of the world
  // calls RunTraining with the same config and its own World. Each optimizer
  // step takes gradient_accumulation_steps x ranks micro-batches of the one
  // data order, dealt round-robin to the ranks; the loss is normalised by
  // the whole global batch's trained tokens, the gradients summed over the
  // ranks (in buckets during backward: gradient_bucket_bytes), so every rank takes the same step
  // and holds the same adapter. Dropout is seeded per micro-batch from (training.seed, step,
  // index), so N ranks train exactly as one rank with N times the accumulation. Evaluation and
  // held-out questions are shared out and summed; rank 0 alone sends events, writes checkpoints and
  // the final adapter; a stop asked of any rank stops all after the same step. A resume keeps the
  // checkpoint's global batch on any number of ranks. On CUDA each rank uses cuda:<local rank>.
  // Default null: one process.
  dist::World* world = nullptr;
  // Data-parallel: the gradients are summed in buckets of about this many
  // bytes (fp32), each started as soon as backward has produced all of its
  // gradients, overlapping the rest of backward (DDP's default size); 0:
  // one all-reduce of everything after backward.
  int64_t gradient_bucket_bytes = 25 << 20;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t total_steps = 0;
  bool stopped = false;            // stopped on request after a checkpoint
  int64_t resumed_from_step = -1;  // -1: fresh start
  double initial_eval_loss = -1;   // before training (-1: no validation data)
  double final_eval_loss = -1;
  double final_eval_token_accuracy = -1;
  double initial_heldout_accuracy = -1;
  double final_heldout_accuracy = -1;
  // Preference methods: the first and last evaluation's metrics (kEval's).
  std::vector<std::pair<std::string, double>> initial_eval_metrics, final_eval_metrics;
  std::string adapter_dir;  // the final PEFT adapter (empty when stopped)
  std::string last_checkpoint;
  // Data-parallel only (0 otherwise): the gradient all-reduce's buckets, the
  // bytes each rank sums per step, the seconds spent after backward waiting
  // for the sums (over all steps of this run: what overlap did not hide),
  // and how many buckets started while backward still ran.
  int gradient_buckets = 0;
  int64_t gradient_bytes_per_step = 0;
  double gradient_wait_seconds = 0;
  int64_t gradient_buckets_started_in_backward = 0;
};

// Runs the job: on success the final adapter is in <output.dir>/adapter
// (TrainResult::adapter_dir), or, when stopped on request, the newest
// checkpoint under <output.dir>/checkpoints. Errors: InvalidArgument for a
// bad config (TrainingConfig::Validate; no adapter method) or bad data
// (naming the file, line and field), NotFound for missing inputs,
// FailedPrecondition for training.device cuda without a GPU, DataLoss for a
// corrupt checkpoint that cannot be skipped, ResourceExhausted for a full
// disk, Internal for LibTorch failures (with its message): LibTorch's
// exceptions never leave RunTraining. The model it loads lives only during
// the call (the adapter method's layers outlive it but no longer belong to a
// model): what it trained is the adapter it saved.
absl::StatusOr<TrainResult> RunTraining(const TrainingConfig& config, const TrainOptions& options);

// Peak memory so far: the CUDA caching allocator's peak allocated bytes on a
// GPU (since the last ResetPeakMemory), the process's peak resident set on
// CPU (it only grows). ResetPeakMemory starts a GPU's count again (no-op on
// CPU).
int64_t PeakMemoryBytes(const torch::Device& device);
void ResetPeakMemory(const torch::Device& device);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_TRAINER_H_
