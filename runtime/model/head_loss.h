// The training loss over the model's output layer (lm_head) when that layer
// is more than one frozen matrix: a bias, a trainable low-rank update (lm_head
// among a LoRA adapter's target modules) or soft-capped logits. Like
// kernels::LinearCrossEntropySum (the plain frozen matrix), it never holds
// more than `chunk_rows` rows of logits: each chunk's gradients are formed as
// its loss is, so no (N, V) tensor is kept for backward.
//
//   loss = Σ over rows whose label != -100 of cross_entropy(z_i, label_i),
//   z = cap · tanh(l / cap) (or l when cap = 0),
//   l = h·Wᵀ + b + scale · (dropout(h)·Aᵀ)·Bᵀ        (LinearParts)
//
// Shape legend: N rows, C hidden size, V vocabulary, r rank.
#ifndef FJORD_RUNTIME_MODEL_HEAD_LOSS_H_
#define FJORD_RUNTIME_MODEL_HEAD_LOSS_H_

#include <torch/types.h>

#include "runtime/model/linear.h"

namespace fjord::model {

// The summed loss as a 0-dim fp32 tensor (the caller divides by its trained
// token count). hidden: (N, C); labels: (N) int64, -100 or in [0, V);
// head.weight: (V, C) and head.bias (V), frozen (a TORCH_CHECK otherwise);
// head.a (r, C), head.b (V, r) in any floating dtype (cast to hidden's for the
// products; their gradients come back in their own). The update's dropout
// (head.dropout > 0) is drawn here, once per call. Gradients flow to hidden,
// A and B; a chunk's matrix products run in hidden's dtype, its logits,
// softmax and the accumulated gradients of A and B in fp32. chunk_rows <= 0:
// all rows at once.
torch::Tensor HeadCrossEntropySum(const torch::Tensor& hidden, const LinearParts& head,
                                  const torch::Tensor& labels, int64_t chunk_rows, double softcap);

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_HEAD_LOSS_H_
