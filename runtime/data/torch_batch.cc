#include "runtime/data/torch_batch.h"

#include <torch/types.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fjord::data {
namespace {

torch::Tensor FromVector(const std::vector<int32_t>& values, int64_t rows, int64_t cols,
                         torch::ScalarType dtype, bool pin) {
  // (B, T) int32 view of the vector, converted (and copied) to `dtype`.
  torch::Tensor view = torch::from_blob(const_cast<int32_t*>(values.data()), {rows, cols},
                                        torch::TensorOptions().dtype(torch::kInt32));
  torch::Tensor out =
      torch::empty({rows, cols}, torch::TensorOptions().dtype(dtype).pinned_memory(pin));
  out.copy_(view);
  return out;
}

}  // namespace

absl::StatusOr<TorchBatch> ToTorch(const PackedBatch& batch, const torch::Device& device) {
  const size_t cells = static_cast<size_t>(batch.batch * batch.seq_len);
  if (batch.batch <= 0 || batch.seq_len <= 0 || batch.input_ids.size() != cells ||
      batch.targets.size() != cells || batch.position_ids.size() != cells ||
      batch.segment_ids.size() != cells) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackedBatch of shape (", batch.batch, ", ", batch.seq_len, ") needs ", cells,
                     " entries per field; got input_ids ", batch.input_ids.size(), ", targets ",
                     batch.targets.size(), ", position_ids ", batch.position_ids.size(),
                     ", segment_ids ", batch.segment_ids.size()));
  }
  try {
    const bool pin = device.is_cuda();
    TorchBatch out;
    out.input_ids = FromVector(batch.input_ids, batch.batch, batch.seq_len, torch::kInt64, pin);
    out.targets = FromVector(batch.targets, batch.batch, batch.seq_len, torch::kInt64, pin);
    out.position_ids =
        FromVector(batch.position_ids, batch.batch, batch.seq_len, torch::kInt64, pin);
    out.segment_ids = FromVector(batch.segment_ids, batch.batch, batch.seq_len, torch::kInt32, pin);
    if (!device.is_cpu()) {
      out.input_ids = out.input_ids.to(device, /*non_blocking=*/true);
      out.targets = out.targets.to(device, /*non_blocking=*/true);
      out.position_ids = out.position_ids.to(device, /*non_blocking=*/true);
      out.segment_ids = out.segment_ids.to(device, /*non_blocking=*/true);
    }
    out.trained_tokens = batch.trained_tokens;
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("converting a batch to tensors on ", device.str(), ": ",
                                            e.what_without_backtrace()));
  }
}

}  // namespace fjord::data
