// A frozen base sharded across the ranks of a data-parallel job (ZeRO-3
// style, for the frozen weights only): each rank holds 1/N of the rows of
// every linear weight, of the embeddings and of lm_head; a layer gathers
// its full weight just before it runs, uses it and lets it go, and gathers
// it again in backward for the input gradient. LoRA weights stay whole on
// every rank (they are small, and the data-parallel gradient sum keeps them
// equal).
//
// The decoder's linear weights may also be held in NF4 (QLoRA's 4 bits,
// runtime/quant/nf4.h) while sharded: each rank quantizes its own rows, and
// a layer gathers the 4-bit rows (with each block's absmax) and dequantizes
// them, so a gather moves 0.5625 bytes per weight instead of 2.
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

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "runtime/model/linear.h"
#include "runtime/quant/nf4.h"

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

// This rank's rows of a weight already held in NF4 (as a checkpoint that
// bitsandbytes saved in 4 bits holds it), as ShardRows takes them: the
// 4-bit rows as they are (not quantized again) with their blocks' absmax in
// fp32 (double quantization undone), zero-padded, on q's device. A row must
// end on a block: in % blocksize == 0 (and blocksize even).
quant::Nf4Tensor ShardNf4Rows(const quant::Nf4Tensor& q, const ShardGroup& group);

// How a sharded weight is gathered piece by piece instead of whole (the
// embeddings and lm_head: the largest single matrices of a model, which a
// rank never holds whole). Piece k is rows [k·pr, k·pr + Take(k)) of every
// rank's shard, concatenated in rank order: ranks·Take(k) rows of the full
// weight, which are not contiguous in it (RowsOf says which they are).
struct ShardPieces {
  int64_t rows = 0;   // the full weight's rows
  int ranks = 1;      //
  int64_t rp = 0;     // rows per rank (RowsPerRank)
  int64_t pr = 0;     // rows per rank in a piece
  int64_t count = 1;  // pieces

  // `pieces` pieces (fewer when a shard has fewer rows).
  static ShardPieces Make(int64_t rows, int ranks, int64_t pieces);
  int64_t Take(int64_t k) const { return std::min(pr, rp - k * pr); }
  // The full weight's row of each row of piece k: (ranks·Take(k)) int64 on
  // `device`; rows >= `rows` are the zero padding of the last shards.
  torch::Tensor RowsOf(int64_t k, torch::Device device) const;
  // Starts gathering piece k from every rank's shard (rp, ...), a
  // collective; the returned function waits for it.
  std::function<torch::Tensor()> StartGather(ShardGroup& group, const torch::Tensor& shard,
                                             int64_t k) const;
};

// How many pieces the embeddings and lm_head are gathered in: 2 per rank,
// so that the piece in use and the next one being gathered are together
// one rank's shard of the matrix.
inline int64_t LargeMatrixPieces(int ranks) { return 2 * static_cast<int64_t>(ranks); }

// The rows of a sharded table (rows, C) at `ids` (any shape, int64 in
// [0, rows)) as ids.shape + (C), gathering the table piece by piece (never
// whole; each rank looks up its own ids). No gradient (a frozen table).
torch::Tensor ShardedEmbedding(const torch::Tensor& shard, int64_t rows, const torch::Tensor& ids,
                               ShardGroup& group, int64_t pieces);

// A frozen linear layer whose weight is sharded by output rows.
class ShardedLinear : public LinearBase {
 public:
  // shard: (rp, in), this rank's rows; out: the full weight's rows; bias:
  // (out) whole, or undefined; pieces: how many pieces its weight is
  // gathered in for a forward (1: whole, the decoder's layers; lm_head uses
  // LargeMatrixPieces).
  ShardedLinear(torch::Tensor shard, int64_t out, torch::Tensor bias,
                std::shared_ptr<ShardGroup> group, int64_t pieces = 1);
  // A shard held in NF4: this rank's rows (rp, in), zero-padded as
  // ShardRows pads them, quantized on their own (QuantizeNf4). A
  // forward gathers every rank's 4-bit rows and fp32 block absmax in one
  // collective and dequantizes them to `dtype` (the model's; computing in
  // x's dtype). Gathered whole, never in pieces.
  ShardedLinear(quant::Nf4Tensor shard, int64_t out, torch::Tensor bias,
                std::shared_ptr<ShardGroup> group, torch::Dtype dtype);

  // x: (..., in) -> (..., out): the weight gathered, used and let go.
  torch::Tensor forward(const torch::Tensor& x) override;
  // The full weight, gathered (a collective: every rank must call it).
  torch::Tensor base_weight() const override;
  torch::Tensor base_bias() const override { return bias_; }
  int64_t in_features() const override { return nf4_ ? nf4_->shape[1] : shard_.size(1); }
  int64_t out_features() const override { return out_; }

  // This rank's rows as held: (rp, in) in the model's dtype, or (nf4())
  // the packed 4-bit rows (quantized_shard() has all their parts).
  const torch::Tensor& shard() const { return shard_; }
  bool nf4() const { return nf4_.has_value(); }
  const quant::Nf4Tensor& quantized_shard() const { return *nf4_; }
  const std::shared_ptr<ShardGroup>& group() const { return group_; }
  ShardPieces pieces() const { return ShardPieces::Make(out_, group_->size(), pieces_); }

  // Starts gathering the weight for the next forward (overlapping whatever
  // runs before it); that forward waits for it instead of gathering. Every
  // rank must prefetch the same layers in the same order. A layer gathered
  // in pieces is not prefetched.
  void Prefetch();
  // The same for the next backward (the input gradient's weight). Only for
  // a layer whose backward will run: one whose input requires a gradient.
  void PrefetchForBackward();

 private:
  // A function that starts gathering the whole weight (ranks·rp, in),
  // padding rows included, in the model's dtype, and returns the function
  // that waits for it. It holds what it needs (not this layer).
  std::function<std::function<torch::Tensor()>()> GatherWeight() const;

  std::function<torch::Tensor()> prefetched_;  // set by Prefetch, taken by forward
  // Set by PrefetchForBackward, taken by backward (shared with the forward's
  // autograd state).
  std::shared_ptr<std::function<torch::Tensor()>> backward_prefetched_ =
      std::make_shared<std::function<torch::Tensor()>>();
  torch::Tensor shard_;                  // (rp, in), or nf4_'s packed rows
  std::optional<quant::Nf4Tensor> nf4_;  // the shard in 4 bits (its parts are buffers)
  torch::Dtype dtype_;                   // what a gathered weight is made in
  int64_t out_;
  torch::Tensor bias_;
  std::shared_ptr<ShardGroup> group_;
  int64_t pieces_;
};

// While one is alive (on this thread), a ShardedLinear forward that
// records a graph keeps the weight it gathered for its own backward instead
// of letting it go and gathering it again there: for the recompute of a
// checkpointed layer, whose backward follows at once (one gather of a layer
// for both, as FSDP does).
class KeepGatheredForBackward {
 public:
  KeepGatheredForBackward();
  ~KeepGatheredForBackward();
  KeepGatheredForBackward(const KeepGatheredForBackward&) = delete;
  KeepGatheredForBackward& operator=(const KeepGatheredForBackward&) = delete;

 private:
  bool was_;
};

// Each row's cross_entropy(head(hidden), labels) (0 where the label is
// -100), softcap > 0: the logits soft-capped (cap·tanh(l/cap)) first: (N)
// fp32, with the gradient for hidden. head's weight is gathered piece by
// piece and never whole: a first pass over the pieces finds each row's
// log-sum-exp, a second (in forward too, last piece first: it is still
// here) each row's gradient, when hidden requires one; chunk_tokens rows of
// logits at a time. Every rank calls it (each with its own rows, any
// number: the gathers do not depend on them). head must have no bias.
torch::Tensor ShardedLinearCrossEntropy(const torch::Tensor& hidden, const ShardedLinear& head,
                                        const torch::Tensor& labels, int64_t chunk_tokens,
                                        double softcap);

// Their sum over rows: a 0-dim fp32 tensor.
torch::Tensor ShardedLinearCrossEntropySum(const torch::Tensor& hidden, const ShardedLinear& head,
                                           const torch::Tensor& labels, int64_t chunk_tokens,
                                           double softcap);

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_SHARD_H_
