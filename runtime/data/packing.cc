#include "runtime/data/packing.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fjord::data {

absl::StatusOr<int64_t> PackBatch(const std::vector<Example>& examples,
                                  absl::Span<const int64_t> order, int64_t rows,
                                  const PackOptions& options, PackedBatch& out) {
  const int64_t t_len = options.seq_len;
  if (rows <= 0 || t_len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch rows and seq_len must be > 0, got ", rows, " and ", t_len));
  }
  out = PackedBatch();
  out.batch = rows;
  out.seq_len = t_len;
  const size_t cells = static_cast<size_t>(rows * t_len);
  out.input_ids.assign(cells, options.pad_id);
  out.targets.assign(cells, kIgnoreIndex);
  out.position_ids.assign(cells, 0);
  out.segment_ids.assign(cells, 0);
  std::vector<int64_t> fill(rows, 0);
  std::vector<int32_t> segments(rows, 0);
  int64_t consumed = 0;
  for (int64_t index : order) {
    if (index < 0 || index >= static_cast<int64_t>(examples.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("example index ", index, " out of range [0, ", examples.size(), ")"));
    }
    const Example& example = examples[index];
    int64_t length = static_cast<int64_t>(example.input_ids.size());
    const bool cut = length > t_len;
    if (cut && !options.truncate) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", index, " (line ", example.line, ") has ", length,
                       " tokens, more than seq_len ", t_len, ", and truncation is off"));
    }
    length = std::min(length, t_len);
    int64_t row = -1;
    if (options.packing) {
      for (int64_t r = 0; r < rows; ++r) {
        if (fill[r] + length <= t_len) {
          row = r;
          break;
        }
      }
    } else if (consumed < rows) {
      row = consumed;
    }
    if (row < 0) break;
    const int32_t segment = ++segments[row];
    const size_t base = static_cast<size_t>(row * t_len + fill[row]);
    for (int64_t t = 0; t < length; ++t) {
      out.input_ids[base + t] = example.input_ids[t];
      out.targets[base + t] = t + 1 < length ? example.targets[t] : kIgnoreIndex;
      out.position_ids[base + t] = static_cast<int32_t>(t);
      out.segment_ids[base + t] = segment;
      if (out.targets[base + t] != kIgnoreIndex) ++out.trained_tokens;
    }
    out.placements.push_back({index, row, fill[row], length});
    fill[row] += length;
    ++out.examples;
    if (cut) ++out.truncated;
    ++consumed;
  }
  return consumed;
}

}  // namespace fjord::data
