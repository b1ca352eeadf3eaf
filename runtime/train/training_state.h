// What an exact resume needs, written into and read from a training
// checkpoint (the trainer's part; the atomic directory, manifest and
// rotation are checkpoint.h's), and the final adapter. Internal to
// runtime/train (trainer.cc).
#ifndef FJORD_RUNTIME_TRAIN_TRAINING_STATE_H_
#define FJORD_RUNTIME_TRAIN_TRAINING_STATE_H_

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/data/loader.h"
#include "runtime/train/adapter_method.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/training_config.h"
#include "runtime/util/env.h"

namespace fjord::train::internal {

// Everything but the adapter weights that an exact resume needs:
// training_state.safetensors (AdamW moments and step, generator states),
// trainer_state.json (step, epoch, tokens, the global batch in micro-batches
// and the world size, the data loader's position, the schedule) and
// config.yaml (the job as run: `config_yaml`).
absl::Status SaveTrainingState(const std::string& dir, const AdamW& opt,
                               const data::DataLoader& loader, int64_t step, int64_t trained_tokens,
                               int64_t epoch, int64_t total_steps, int64_t warmup,
                               int64_t micro_per_step, int world_size, const TrainingConfig& cfg,
                               const std::string& config_yaml, const torch::Device& device);

struct RestoredState {
  int64_t step = 0, trained_tokens = 0, epoch = 0;
};

// Restores what SaveTrainingState wrote (and the adapter weights) from a
// verified checkpoint. Nothing is restored partially: every file is read and
// checked before the loader, optimizer and generators change.
absl::StatusOr<RestoredState> LoadTrainingState(const std::string& dir, AdamW& opt,
                                                data::DataLoader& loader, AdapterMethod& adapter,
                                                const torch::Device& device, Env* env);

// The global batch of the checkpoint in `dir` in micro-batches, or nullopt
// when it does not say (checkpoints written before data-parallel training:
// one rank, gradient accumulation steps micro-batches).
std::optional<int64_t> MicroBatchesPerStep(const std::string& dir);

// Writes the final adapter atomically: <dir>.tmp, then renamed to <dir>.
absl::Status SaveFinalAdapter(AdapterMethod& adapter, const std::string& dir);

}  // namespace fjord::train::internal

#endif  // FJORD_RUNTIME_TRAIN_TRAINING_STATE_H_
