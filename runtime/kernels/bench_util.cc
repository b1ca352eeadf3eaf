#include "runtime/kernels/bench_util.h"

#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>

#include "runtime/kernels/fused.h"

#if FJORD_KERNELS_FUSED
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "runtime/kernels/cuda_check.h"
#endif

namespace fjord::kernels::bench {

bool GpuAvailable(std::string* why) {
  if (!fused::kBuilt) {
    *why = "this build has no CUDA kernels (no CUDA toolkit or CPU-only LibTorch)";
    return false;
  }
  if (!torch::cuda::is_available()) {
    *why = "no CUDA device is visible (torch::cuda::is_available() is false)";
    return false;
  }
  return true;
}

#if FJORD_KERNELS_FUSED

Timing TimeCuda(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  torch::cuda::synchronize();
  std::vector<cudaEvent_t> starts(reps);
  std::vector<cudaEvent_t> stops(reps);
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventCreate(&starts[i]));
    CUDA_CHECK(cudaEventCreate(&stops[i]));
  }
  for (int i = 0; i < reps; ++i) {
    // The current stream each time: fn() runs its work there.
    CUDA_CHECK(cudaEventRecord(starts[i], c10::cuda::getCurrentCUDAStream().stream()));
    fn();
    CUDA_CHECK(cudaEventRecord(stops[i], c10::cuda::getCurrentCUDAStream().stream()));
  }
  torch::cuda::synchronize();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    float elapsed = 0;
    CUDA_CHECK(cudaEventElapsedTime(&elapsed, starts[i], stops[i]));
    ms.push_back(elapsed);
    CUDA_CHECK(cudaEventDestroy(starts[i]));
    CUDA_CHECK(cudaEventDestroy(stops[i]));
  }
  std::sort(ms.begin(), ms.end());
  Timing t;
  if (ms.empty()) return t;
  t.min_ms = ms.front();
  t.median_ms =
      ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  return t;
}

int64_t PeakExtraBytes(const std::function<void()>& fn) {
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const c10::DeviceIndex device = c10::cuda::current_device();
  const size_t agg = 0;  // StatType::AGGREGATE (its namespace moved between LibTorch versions)
  torch::cuda::synchronize();
  const int64_t before = alloc::getDeviceStats(device).allocated_bytes[agg].current;
  alloc::resetPeakStats(device);
  fn();
  torch::cuda::synchronize();
  const int64_t peak = alloc::getDeviceStats(device).allocated_bytes[agg].peak;
  return std::max<int64_t>(0, peak - before);
}

std::string DeviceName() { return at::cuda::getCurrentDeviceProperties()->name; }

#else

Timing TimeCuda(const std::function<void()>&, int, int) { return {}; }
int64_t PeakExtraBytes(const std::function<void()>&) { return 0; }
std::string DeviceName() { return "none"; }

#endif

void PrintTable(const std::vector<Row>& rows) {
  std::printf("%-22s %-10s %-34s %10s %12s %10s %16s %8s\n", "op", "impl", "shape", "fwd ms",
              "fwd+bwd ms", "peak MiB", "fwd+bwd rate", "speedup");
  for (const Row& r : rows) {
    std::printf("%-22s %-10s %-34s %10.3f %12.3f %10.1f %16s %8s\n", r.op.c_str(), r.impl.c_str(),
                r.shape.c_str(), r.fwd_ms, r.fwd_bwd_ms, r.peak_mib, r.rate.c_str(),
                r.speedup.c_str());
  }
  std::fflush(stdout);
}

}  // namespace fjord::kernels::bench
