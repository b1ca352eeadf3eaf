// DataLoader: epochs of shuffled examples packed into micro-batches, with a
// position that can be saved and restored for exact resume.
//
// Order: epoch e visits every example once, in the permutation given by
// EpochOrder(e): a Fisher-Yates shuffle driven by fjord's own SplitMix64
// generator seeded from (seed, e), so it is identical on every platform and
// standard library (identity order when shuffle is off).
//
// Position: (epoch, index), index = how many examples of the epoch's order
// were consumed. NextBatch consumes a contiguous run of the order (packing.h
// PackBatch), so the position alone determines every following batch,
// whatever batch sizes were used before. SaveState/RestoreState carry it with
// the seed and a fingerprint of the examples, so a resume against different
// data or another seed is refused rather than silently diverging.
#ifndef FJORD_RUNTIME_DATA_LOADER_H_
#define FJORD_RUNTIME_DATA_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/example.h"
#include "runtime/data/packing.h"

namespace fjord::data {

struct LoaderOptions {
  int64_t seq_len = 2048;  // T; must be > 0
  bool packing = true;     // default true: first-fit packing; false: one example per row
  bool shuffle = true;     // default true: a new permutation every epoch
  uint64_t seed = 0;
  // Default true: examples longer than seq_len are cut (PackedBatch::truncated);
  // false: Create refuses a dataset that has any.
  bool truncate = true;
  int32_t pad_id = 0;
};

// Not thread-safe: one loader per consumer.
class DataLoader {
 public:
  // `examples` are shared, read-only. InvalidArgument when there are none,
  // seq_len <= 0, or (truncate off) an example is longer than seq_len (the
  // message names its index and source line).
  static absl::StatusOr<std::unique_ptr<DataLoader>> Create(
      std::shared_ptr<const std::vector<Example>> examples, LoaderOptions options);

  // The next micro-batch of `batch_rows` rows of seq_len tokens (rows may be
  // left as padding at the end of an epoch). Sets PackedBatch::epoch, and
  // end_of_epoch on the epoch's last batch, after which the position moves to
  // (epoch + 1, 0). InvalidArgument when batch_rows <= 0.
  absl::StatusOr<PackedBatch> NextBatch(int64_t batch_rows);

  int64_t epoch() const { return epoch_; }
  int64_t index() const { return index_; }  // examples of this epoch consumed
  int64_t num_examples() const { return static_cast<int64_t>(examples_->size()); }

  // The order of example indices in `epoch`.
  std::vector<int64_t> EpochOrder(int64_t epoch) const;

  // The position as a small JSON object: {"kind": "fjord.data.DataLoader",
  // "version": 1, "epoch", "index", "seed", "shuffle", "num_examples",
  // "fingerprint"}.
  std::string SaveState() const;
  // Moves to the position in `state` (from SaveState). InvalidArgument when
  // it is malformed or out of range; FailedPrecondition when it was saved for
  // other data (example count or fingerprint differ) or another seed/shuffle.
  // On error the position is unchanged.
  absl::Status RestoreState(absl::string_view state);

 private:
  DataLoader(std::shared_ptr<const std::vector<Example>> examples, LoaderOptions options);
  void SetPosition(int64_t epoch, int64_t index);

  std::shared_ptr<const std::vector<Example>> examples_;
  LoaderOptions options_;
  uint64_t fingerprint_ = 0;
  int64_t epoch_ = 0;
  int64_t index_ = 0;
  std::vector<int64_t> order_;  // EpochOrder(epoch_)
};

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_LOADER_H_
