// The trainer: one LoRA fine-tuning job, in-process, from a JobConfig.
//
// RunTraining reads top to bottom (trainer.cc): setup (device, model, adapters,
// tokenizer, data, optimizer, resume), the loop (accumulate micro-batches,
// loss normalised by the trained tokens of the whole accumulated batch, clip,
// step, schedule, evaluate, checkpoint), then the final adapter.
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
#include "runtime/train/job_config.h"

namespace fjord::train {

// What the trainer reports as it goes. Fields not meaningful for a type are 0.
struct TrainEvent {
  enum class Type { kStart, kStep, kEval, kCheckpoint, kLog, kDone };
  Type type = Type::kLog;
  int64_t step = 0;         // optimizer steps done
  int64_t total_steps = 0;
  int64_t epoch = 0;
  double loss = 0;          // mean CE per trained token over the step
  double lr = 0;
  double grad_norm = 0;     // before clipping
  double tokens_per_s = 0;  // non-padding tokens per second of training steps since (re)start
                            // (evaluation and checkpoint time excluded)
  double eta_s = 0;
  int64_t trained_tokens = 0;      // cumulative targets that carried loss
  int64_t peak_memory_bytes = 0;   // peak GPU memory on CUDA, peak RSS on CPU
  double eval_loss = 0;
  double eval_token_accuracy = 0;
  double heldout_accuracy = -1;    // -1: not measured
  std::string message;             // kLog: text; kCheckpoint/kDone: a path
};

const char* EventTypeName(TrainEvent::Type type);
// One JSON object (no newline) for event streams: {"type": "step", "step": ...}.
std::string EventToJson(const TrainEvent& event);

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
  // Called at every optimizer step (0-based), after the accumulated
  // backward and before clipping, with the trainable parameters (their
  // .grad() is the step's gradient). For inspection; may be empty.
  std::function<void(int64_t step, const std::vector<std::pair<std::string, torch::Tensor>>& params)>
      on_gradients;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t total_steps = 0;
  bool stopped = false;             // stopped on request after a checkpoint
  int64_t resumed_from_step = -1;   // -1: fresh start
  double initial_eval_loss = -1;    // before training (-1: no validation data)
  double final_eval_loss = -1;
  double final_eval_token_accuracy = -1;
  double initial_heldout_accuracy = -1;
  double final_heldout_accuracy = -1;
  std::string adapter_dir;          // the final PEFT adapter (empty when stopped)
  std::string last_checkpoint;
};

// Runs the job. Errors: InvalidArgument for bad config/data (naming the file,
// line and field), NotFound for missing inputs, DataLoss for a corrupt
// checkpoint that cannot be skipped, ResourceExhausted for a full disk,
// Internal for LibTorch failures (with its message).
absl::StatusOr<TrainResult> RunTraining(const JobConfig& config, const TrainOptions& options);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_TRAINER_H_
