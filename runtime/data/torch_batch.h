// PackedBatch -> LibTorch tensors (the only LibTorch-facing piece of
// runtime/data; target //runtime/data:torch_batch).
#ifndef FJORD_RUNTIME_DATA_TORCH_BATCH_H_
#define FJORD_RUNTIME_DATA_TORCH_BATCH_H_

#include <torch/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "runtime/data/packing.h"

namespace fjord::data {

struct TorchBatch {
  torch::Tensor input_ids;     // (B, T) int64
  torch::Tensor targets;       // (B, T) int64, kIgnoreIndex (-100) where no loss
  torch::Tensor position_ids;  // (B, T) int64
  torch::Tensor segment_ids;   // (B, T) int32, 0 = padding
  int64_t trained_tokens = 0;  // targets != -100
};

// Copies `batch` into new tensors on `device` (CPU by default; a CUDA device
// gets a pinned-memory staging copy and a non-blocking transfer on the
// current stream). InvalidArgument when the vectors do not have B*T entries;
// Internal when LibTorch fails (e.g. no such device).
absl::StatusOr<TorchBatch> ToTorch(const PackedBatch& batch,
                                   const torch::Device& device = torch::kCPU);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_TORCH_BATCH_H_
