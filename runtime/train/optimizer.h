// AdamW with decoupled weight decay over an explicit list of trainable
// parameters, and the learning-rate schedules. fjord keeps its own small
// optimizer so that its whole state (moments, step) is plain named tensors
// that checkpoints save and restore bit for bit.
#ifndef FJORD_RUNTIME_TRAIN_OPTIMIZER_H_
#define FJORD_RUNTIME_TRAIN_OPTIMIZER_H_

#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace fjord::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p -= lr·wd·p, applied before the Adam update
};

// Not thread-safe. Moments are fp32 on the parameters' device.
class AdamW {
 public:
  // `params`: (name, parameter) pairs in a fixed order; names key the state.
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions options);

  // One update with learning rate `lr` from the parameters' .grad() (a
  // parameter without a gradient is skipped, its moments untouched).
  void Step(double lr);
  void ZeroGrad();
  int64_t step() const { return step_; }

  // State as named tensors: "<name>.exp_avg", "<name>.exp_avg_sq", and a
  // 0-dim int64 "step".
  std::vector<std::pair<std::string, torch::Tensor>> StateTensors() const;
  // Restores from StateTensors() output. InvalidArgument naming the missing or
  // mis-shaped tensor.
  absl::Status LoadStateTensors(const std::map<std::string, torch::Tensor>& state);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param;
    torch::Tensor exp_avg;
    torch::Tensor exp_avg_sq;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// Learning rate at optimizer step `step` (0-based) of `total` steps: linear
// warmup over `warmup` steps from 0 to `peak`, then "constant", "linear"
// (to min_ratio·peak at the end) or "cosine" (half cosine to min_ratio·peak).
double LearningRate(const std::string& schedule, double peak, int64_t step, int64_t total,
                    int64_t warmup, double min_ratio);

// Scales all gradients so their global L2 norm is at most max_norm (no-op when
// max_norm <= 0). Returns the norm before clipping.
double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_OPTIMIZER_H_
