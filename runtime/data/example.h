// Example: one tokenized training sequence with next-token targets.
#ifndef FJORD_RUNTIME_DATA_EXAMPLE_H_
#define FJORD_RUNTIME_DATA_EXAMPLE_H_

#include <cstdint>
#include <vector>

namespace fjord::data {

// Target value for positions that carry no loss (PyTorch's ignore_index).
inline constexpr int32_t kIgnoreIndex = -100;

// One example, already shifted for next-token prediction:
//   targets[t] = input_ids[t + 1]  when token t + 1 is trained, else kIgnoreIndex;
//   targets.back() = kIgnoreIndex  (nothing follows the last token: no EOS is
//   appended beyond what the template itself renders, e.g. <|eot_id|>).
// input_ids.size() == targets.size() >= 1.
struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> targets;
  int64_t line = 0;  // 1-based line of the source file (0 when not from a file)
};

// Builds an Example from rendered ids and a per-token "trained" flag (same
// length), keeping at most `max_length` tokens when max_length > 0. After
// truncation the last kept token's target is kIgnoreIndex too: the example is
// exactly its first max_length tokens.
Example MakeExample(const std::vector<int32_t>& ids, const std::vector<bool>& trained,
                    int64_t max_length = 0);

// Number of targets that are not kIgnoreIndex.
int64_t CountTrained(const std::vector<int32_t>& targets);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_EXAMPLE_H_
