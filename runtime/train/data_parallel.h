// The data-parallel steps of the trainer (runtime/dist/world.h does the
// talking): dropout seeded per micro-batch, rank 0's adapter weights to every
// rank, the gradients summed. Internal to runtime/train (trainer.cc).
#ifndef FJORD_RUNTIME_TRAIN_DATA_PARALLEL_H_
#define FJORD_RUNTIME_TRAIN_DATA_PARALLEL_H_

#include <torch/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "runtime/dist/world.h"
#include "runtime/model/shard.h"

namespace fjord::train::internal {

// The dropout of micro-batch `index` of step `step` draws from a generator
// seeded by (seed, step, index), so that which rank runs a micro-batch (and
// how many ranks there are) changes no mask.
void SeedMicroBatch(int64_t seed, int64_t step, int64_t index, const torch::Device& device);

// The sharded base's collectives (runtime/model/shard.h) on a World. A
// failed collective throws c10::Error with the World's message (a rank
// gone), which RunTraining returns as its error.
class WorldShardGroup : public model::ShardGroup {
 public:
  explicit WorldShardGroup(dist::World& world) : world_(world) {}
  int rank() const override { return world_.rank(); }
  int size() const override { return world_.size(); }
  torch::Tensor AllGather(const torch::Tensor& shard) override;
  std::function<torch::Tensor()> StartAllGather(const torch::Tensor& shard) override;

  // Bytes this rank has received in gathers so far (the other ranks'
  // shards: (N-1)/N of each gathered tensor).
  int64_t received_bytes() const { return received_bytes_.load(); }

 private:
  dist::World& world_;
  std::atomic<int64_t> received_bytes_{0};
};

// Every rank's trainable parameters become rank 0's.
absl::Status BroadcastParameters(dist::World& world, const std::vector<torch::Tensor>& params);

// Sums every rank's gradients of the trainable parameters, in buckets that
// are all-reduced while backward still runs (as DDP's Reducer does): the
// parameters are dealt, in reverse order (the order backward produces
// their gradients), into buckets of about `bucket_bytes` of fp32; a hook
// after each parameter's gradient accumulation marks it ready, and a bucket
// whose parameters are all ready starts its all-reduce at once (buckets
// start in index order on every rank, as the collectives must match).
// Only the last backward of a step is watched (Arm), so with gradient
// accumulation the sum starts as the step's last micro-batch's gradients
// arrive. Finish() starts what is left (a rank without a micro-batch, a
// parameter without a gradient: zeros), waits for every bucket and writes
// the sums back into .grad(). bucket_bytes 0: one bucket, started after
// backward (no overlap).
class GradientReducer {
 public:
  GradientReducer(dist::World& world, std::vector<torch::Tensor> params, int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward is the step's last on this rank.
  void Arm(int64_t step);
  // Every rank's gradients summed into .grad() (see above).
  absl::Status Finish(int64_t step);

  int buckets() const { return static_cast<int>(buckets_.size()); }
  int64_t bytes_per_step() const { return bytes_; }
  // Totals over the steps finished: seconds spent in Finish (the all-reduce
  // time not hidden behind backward), and buckets started during backward.
  double finish_seconds() const { return finish_seconds_; }
  int64_t buckets_started_in_backward() const { return started_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    int64_t numel = 0;
    int64_t ready = 0;
    torch::Tensor flat;
    dist::World::Pending pending;
  };
  void OnGradient(size_t param);  // from autograd, after accumulation
  void Start(Bucket& b);

  dist::World& world_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param -> bucket
  std::vector<char> seen_;         // param -> its gradient arrived this step
  size_t next_ = 0;                // the next bucket to start
  bool armed_ = false;
  int64_t step_ = 0;
  int64_t bytes_ = 0;
  double finish_seconds_ = 0;
  int64_t started_in_backward_ = 0;
};

}  // namespace fjord::train::internal

#endif  // FJORD_RUNTIME_TRAIN_DATA_PARALLEL_H_
