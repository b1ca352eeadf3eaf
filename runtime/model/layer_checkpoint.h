// Gradient checkpointing of one decoder block (internal to runtime/model).
#ifndef FJORD_RUNTIME_MODEL_LAYER_CHECKPOINT_H_
#define FJORD_RUNTIME_MODEL_LAYER_CHECKPOINT_H_

#include <torch/types.h>

#include <memory>

#include "runtime/model/model.h"

namespace fjord::model {

// layer(x) with gradient checkpointing: the block runs without autograd and
// only x is kept; backward recomputes it from x, with the forward's RNG
// states (the same dropout masks), and differentiates the recomputation with
// respect to x and the block's parameters that required a gradient at call
// time. On a sharded base the recompute's gathered weights serve that
// backward too (KeepGatheredForBackward). When nothing needs a gradient (x
// does not, and no parameter of the block does), the plain forward.
// x: (B, T, C); cos, sin: (B, T, D). Returns (B, T, C).
torch::Tensor CheckpointedLayer(const std::shared_ptr<DecoderLayer>& layer, const torch::Tensor& x,
                                const torch::Tensor& cos, const torch::Tensor& sin,
                                const AttentionLayout& layout);

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_LAYER_CHECKPOINT_H_
