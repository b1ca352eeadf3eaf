// Timing and memory helpers for the kernel benchmarks (kernel_bench,
// lora_kernel_bench): CUDA-event timing on the current stream, the caching
// allocator's peak, and a plain-text table.
#ifndef FJORD_RUNTIME_KERNELS_BENCH_UTIL_H_
#define FJORD_RUNTIME_KERNELS_BENCH_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fjord::kernels::bench {

// True when a CUDA device is usable and the fused kernels are built; else
// false with the reason in *why.
bool GpuAvailable(std::string* why);

// Median and minimum milliseconds of `fn` over `reps` timed calls, each
// between its own pair of CUDA events on the current stream, after `warmup`
// untimed calls.
struct Timing {
  double median_ms = 0;
  double min_ms = 0;
};
Timing TimeCuda(const std::function<void()>& fn, int warmup, int reps);

// Peak bytes held by LibTorch's CUDA caching allocator while `fn` runs, above
// what was held before it (synchronises before and after).
int64_t PeakExtraBytes(const std::function<void()>& fn);

// Device name, e.g. "NVIDIA H100 80GB HBM3".
std::string DeviceName();

// One line of the results table.
struct Row {
  std::string op;
  std::string impl;  // "fused" or "reference"
  std::string shape;
  double fwd_ms = 0;
  double fwd_bwd_ms = 0;
  double peak_mib = 0;  // during forward + backward
  std::string rate;     // achieved GB/s or TFLOP/s of forward + backward
  std::string speedup;  // reference time / fused time (fwd+bwd), on fused rows
};
void PrintTable(const std::vector<Row>& rows);

}  // namespace fjord::kernels::bench

#endif  // FJORD_RUNTIME_KERNELS_BENCH_UTIL_H_
