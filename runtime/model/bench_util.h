// What the runtime's benchmark programs share: picking the device from a
// --device flag, and the median wall time of a call (synchronised on CUDA).
// For benchmarks only (attention_bench, lora/multi_lora_bench).
#ifndef FJORD_RUNTIME_MODEL_BENCH_UTIL_H_
#define FJORD_RUNTIME_MODEL_BENCH_UTIL_H_

#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace fjord::bench {

// Whether a --device of "cpu", "cuda" or "auto" (CUDA when a device is
// visible) runs on CUDA. InvalidArgument for another value;
// FailedPrecondition for "cuda" with no CUDA device visible.
inline absl::StatusOr<bool> UseCuda(const std::string& device_flag) {
  if (device_flag != "auto" && device_flag != "cpu" && device_flag != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or auto, got '", device_flag, "'"));
  }
  const bool visible = torch::cuda::is_available();
  if (device_flag == "cuda" && !visible) {
    return absl::FailedPreconditionError("--device=cuda but no CUDA device is visible");
  }
  return device_flag == "cuda" || (device_flag == "auto" && visible);
}

// The median wall time in milliseconds of `reps` calls of `fn`, after
// `warmup` untimed ones; each timed call starts and ends with a CUDA
// synchronize when `cuda`. reps >= 1.
inline double MedianMs(const std::function<void()>& fn, bool cuda, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    if (cuda) torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    fn();
    if (cuda) torch::cuda::synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace fjord::bench

#endif  // FJORD_RUNTIME_MODEL_BENCH_UTIL_H_
