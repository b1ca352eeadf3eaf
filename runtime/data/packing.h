// Packing tokenized examples into fixed-shape (B, T) batches.
//
// Row layout (row-major B x T), per example placed in a row:
//   input_ids    the example's ids; pad_id on padding
//   targets      the example's shifted targets (example.h); kIgnoreIndex on
//                padding and on the last token of every example, so no target
//                ever points across a segment boundary
//   position_ids 0, 1, 2, ... restarting at 0 for every example; 0 on padding
//   segment_ids  1, 2, 3, ... per example within the row; 0 = padding
// An example is never split across rows: one longer than seq_len is cut to
// its first seq_len tokens (counted in `truncated`) when truncate is set, else
// it is refused.
#ifndef FJORD_RUNTIME_DATA_PACKING_H_
#define FJORD_RUNTIME_DATA_PACKING_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/data/example.h"

namespace fjord::data {

struct PackedBatch {
  int64_t batch = 0;                  // B rows
  int64_t seq_len = 0;                // T tokens per row
  std::vector<int32_t> input_ids;     // (B, T)
  std::vector<int32_t> targets;       // (B, T), kIgnoreIndex where no loss
  std::vector<int32_t> position_ids;  // (B, T)
  std::vector<int32_t> segment_ids;   // (B, T), 0 = padding
  int64_t trained_tokens = 0;         // targets != kIgnoreIndex
  int64_t examples = 0;               // examples placed in the batch
  int64_t truncated = 0;              // of which cut to seq_len
  // Where each placed example went, in the order placed: its index in the
  // examples, its row, its first column and its length (after truncation).
  struct Placement {
    int64_t example = 0, row = 0, start = 0, length = 0;
  };
  std::vector<Placement> placements;
  int64_t epoch = 0;          // DataLoader: the epoch the batch belongs to
  bool end_of_epoch = false;  // DataLoader: last batch of its epoch
};

struct PackOptions {
  int64_t seq_len = 2048;  // T; must be > 0
  // Default true: several examples per row (first fit). false: one example
  // per row, padded.
  bool packing = true;
  // Default true: cut examples longer than seq_len; false: refuse them.
  bool truncate = true;
  int32_t pad_id = 0;  // input id on padding
};

// Fills `out` (B = rows, T = options.seq_len) with examples[order[0]],
// examples[order[1]], ... in that order, each into the first row with room
// for it (packing) or into the next row (no packing), and stops at the first
// example that fits nowhere. Returns how many entries of `order` were
// consumed: at least 1 when order is non-empty. Rows left empty are all
// padding. InvalidArgument for rows or seq_len <= 0, an index out of range,
// or (truncate off) an example longer than seq_len.
absl::StatusOr<int64_t> PackBatch(const std::vector<Example>& examples,
                                  absl::Span<const int64_t> order, int64_t rows,
                                  const PackOptions& options, PackedBatch& out);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_PACKING_H_
