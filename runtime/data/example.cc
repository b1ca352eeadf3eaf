#include "runtime/data/example.h"

#include <algorithm>

namespace fjord::data {

Example MakeExample(const std::vector<int32_t>& ids, const std::vector<bool>& trained,
                    int64_t max_length) {
  size_t n = ids.size();
  if (max_length > 0) n = std::min(n, static_cast<size_t>(max_length));
  Example example;
  example.input_ids.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
  example.targets.assign(n, kIgnoreIndex);
  for (size_t t = 0; t + 1 < n; ++t) {
    if (trained[t + 1]) example.targets[t] = ids[t + 1];
  }
  return example;
}

int64_t CountTrained(const std::vector<int32_t>& targets) {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != kIgnoreIndex; });
}

}  // namespace fjord::data
