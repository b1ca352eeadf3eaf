// Will a job's frozen base fit on one of the node's GPUs? Checked at
// job.create (server/job_handlers.cc), so a job that cannot fit is refused
// with the arithmetic rather than failing with CUDA out of memory after it
// waited in the queue.
//
// Without shard_base every rank of a job holds the whole base (data
// parallel), so the job's GPU count does not change what one GPU needs:
//   bf16: 2 bytes x every parameter
//   nf4:  the decoder's linear weights at 0.5 byte (4 bits) + 1/64 (one 8-bit
//         absmax per 64-weight block) + 4/(64*256) (one fp32 scale per 256
//         blocks: double quantization) bytes each, the other parameters
//         (embeddings, lm_head, norms, biases) at 2 bytes.
// With shard_base over N GPUs each GPU holds 1/N of the rows of every
// decoder linear weight, the embeddings and lm_head, and gathers what it
// needs for a moment (docs/distributed.md, "A base sharded across the
// ranks"):
//   held, bf16: 2 bytes x ceil(every parameter / N) (norms and biases are
//              in fact held whole: too small to count)
//   held, nf4: the nf4 bytes above x ceil(decoder linear weights / N) (a
//              checkpoint stored in 4 bits: 0.5 + 4/64, its rows' absmax in
//              fp32) + 2 bytes x ceil(other parameters / N)
//   gathered:  2 bytes x ceil(vocab / N) x hidden (the embeddings and
//              lm_head are gathered in 2N pieces, never whole: the piece in
//              use and the next one, gathered ahead of it)
//            + 2 bytes x one decoder layer's linear weights (the layer that
//              runs; the next layer's, gathered ahead of it, is as big again:
//              1/80 of a 70B's base, inside the 10% left below); in nf4 its
//              4-bit rows as gathered (0.5 + 4/64 bytes each) on top.
// The base may take 90% of a GPU's memory; the rest is left for the CUDA
// context, activations and the adapter (with its optimizer state).
#ifndef FJORD_DAEMON_SERVER_BASE_MEMORY_H_
#define FJORD_DAEMON_SERVER_BASE_MEMORY_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "runtime/model/config.h"

namespace fjord::daemon {

// The share of a GPU's memory the frozen base may take.
inline constexpr double kBaseMemoryFraction = 0.9;

// Bytes of the frozen base on each GPU: bf16 (nf4 false) or nf4.
double FrozenBaseBytes(const model::ModelConfig::ParameterCount& count, bool nf4);

// What each of `ranks` GPUs needs for a base sharded over them: bf16, or
// (nf4) its decoder linear weights in 4 bits (`stored_4bit`: as a checkpoint
// stored in bitsandbytes 4-bit is sharded, its absmax in fp32).
struct ShardedBaseBytes {
  double held = 0;     // 2 B x ceil(parameters / ranks), or in nf4 as above
  double lm_head = 0;  // 2 B x ceil(vocab / ranks) x hidden: two pieces of lm_head in flight
  double layer = 0;    // one decoder layer's linear weights gathered as it runs: 2 B (+ 0.5625)
  double total() const { return held + lm_head + layer; }
};
ShardedBaseBytes ShardedFrozenBaseBytes(const model::ModelConfig& config, int ranks,
                                        bool nf4 = false, bool stored_4bit = false);

// OK when the base of `model_name` (its config.json parsed as `config`)
// fits in kBaseMemoryFraction of `gpu_memory_gb` (GB = 10^9 bytes; 0 or
// less: unknown, only the first rule below is checked) on each of the job's
// `gpus` GPUs, held as `quantization` ("none" or "nf4"; a checkpoint stored
// in bitsandbytes 4-bit, config.quantization "bitsandbytes-nf4", counts as
// nf4 whatever it says) and sharded over them when `shard_base` and gpus >
// 1. `node_gpus`: the node's GPU count (how far sharding could go).
// InvalidArgument otherwise, whose message shows the arithmetic and what
// would fit, with param:
//  - "shard_base" for shard_base over several GPUs of a checkpoint stored in
//    4 bits whose rows do not end on a block of 64 (the trainer cannot
//    slice them), or when only shard_base (with nf4 or not) would fit;
//  - "quantization" when nf4 would fit;
//  - "gpus" when a sharded base would fit over more of the node's GPUs;
//  - "model" when nothing does.
absl::Status CheckBaseFitsOnGpu(absl::string_view model_name, const model::ModelConfig& config,
                                absl::string_view quantization, bool shard_base, int gpus,
                                int node_gpus, double gpu_memory_gb);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_BASE_MEMORY_H_
