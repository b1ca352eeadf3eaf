// A frozen base sharded across the ranks of a data-parallel job (ZeRO-3
// style, for the frozen weights only): each rank holds 1/N of the rows of
// every linear weight, of the embeddings and of lm_head; a layer gathers
// its full weight just before it runs, uses it and lets it go, and gathers
// it again in backward for the input gradient. LoRA weights stay whole on
// every rank (they are small, and the data-parallel gradient sum keeps them
// equal).
//
// runtime/model talks to the other ranks only through ShardGroup, so it
// needs no c10d: the trainer implements it on dist::World. Every rank must
// call the model the same way (the same forwards and backwards in the same
// order), since each gather is a collective.
//
// Shape legend: out, in features; V vocab; C hidden; rp rows per rank.
#ifndef FJORD_RUNTIME_MODEL_SHARD_H_
#define FJORD_RUNTIME_MODEL_SHARD_H_

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "runtime/model/linear.h"

namespace fjord::model {

// The ranks a sharded base is spread over. Failures (a rank gone) throw
// c10::Error with a message that says what failed.
class ShardGroup {
 public:
  virtual ~ShardGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Every rank's `shard` (the same shape and dtype on every rank),
  // concatenated along dim 0 in rank order, on shard's device.
  virtual torch::Tensor AllGather(const torch::Tensor& shard) = 0;
  // AllGather started now and waited for by the returned function (once).
  // Default: gathered at once.
  virtual std::function<torch::Tensor()> StartAllGather(const torch::Tensor& shard) {
    torch::Tensor all = AllGather(shard);
    return [all] { return all; };
  }
};

// Rows per rank when `rows` are spread over `ranks` (the last shards are
// padded with zero rows so that all are the same size).
inline int64_t RowsPerRank(int64_t rows, int ranks) { return (rows + ranks - 1) / ranks; }

// This rank's rows [rank·rp, (rank+1)·rp) of w (rows, ...), zero-padded to rp
// rows, as a new contiguous tensor (w itself is not kept).
torch::Tensor ShardRows(const torch::Tensor& w, const ShardGroup& group);

// A frozen linear layer whose weight is sharded by output rows.
class ShardedLinear : public LinearBase {
 public:
  // shard: (rp, in), this rank's rows; out: the full weight's rows; bias:
  // (out) whole, or undefined.
  ShardedLinear(torch::Tensor shard, int64_t out, torch::Tensor bias,
                std::shared_ptr<ShardGroup> group);

  // x: (..., in) -> (..., out): the weight gathered, used and let go.
  torch::Tensor forward(const torch::Tensor& x) override;
  // The full weight, gathered (a collective: every rank must call it).
  torch::Tensor base_weight() const override;
  torch::Tensor base_bias() const override { return bias_; }
  int64_t in_features() const override { return shard_.size(1); }
  int64_t out_features() const override { return out_; }

  const torch::Tensor& shard() const { return shard_; }

  // Starts gathering the weight for the next forward (overlapping whatever
  // runs before it); that forward waits for it instead of gathering. Every
  // rank must prefetch the same layers in the same order.
  void Prefetch();

 private:
  std::function<torch::Tensor()> prefetched_;  // set by Prefetch, taken by forward
  torch::Tensor shard_;                        // (rp, in)
  int64_t out_;
  torch::Tensor bias_;
  std::shared_ptr<ShardGroup> group_;
};

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_SHARD_H_
