// Dropout on the LoRA adapter input, and its backward, with the mask
// regenerated from a seed (lora_launchers.h).
//
// Fused: the mask draw, the 1/(1 − p) scale and the multiply (forward); the
// mask draw, scale and the accumulation into dx (backward).
// Never materialised: the mask. The forward's dropped x (N, in) is a
// temporary of the LoRA forward, freed once x·Aᵀ is computed; the backward
// makes it again for dA.
// Gradients: accumulated into dx (+=).
//
// Shape legend: n elements of an (N, in) tensor, flattened.
#include <cuda_runtime.h>

#include <cstdint>

#include "lora/kernels/lora_launchers.h"
#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"

namespace fjord::lora::kernels::cuda {
namespace {

using ::fjord::kernels::cuda::FromFloat;
using ::fjord::kernels::cuda::GridFor;
using ::fjord::kernels::cuda::ToFloat;

constexpr int kThreads = 256;

__device__ __forceinline__ uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// 1/(1 − p) when element i is kept, else 0.
__device__ __forceinline__ float KeepScale(uint64_t seed, int64_t i, float p, float scale) {
  const uint64_t h = SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(i)));
  const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  return u >= p ? scale : 0.0f;
}

template <typename T>
__global__ void DropoutForwardKernel(const T* x, T* out, int64_t n, float p, float scale,
                                     uint64_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<T>(ToFloat(x[i]) * KeepScale(seed, i, p, scale));
  }
}

template <typename T>
__global__ void DropoutMaskedAddKernel(T* acc, const T* __restrict__ t, int64_t n, float p,
                                       float scale, uint64_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc[i] = FromFloat<T>(ToFloat(acc[i]) + ToFloat(t[i]) * KeepScale(seed, i, p, scale));
  }
}

}  // namespace

void DropoutForward(const void* x, void* out, int64_t n, float p, uint64_t seed, DType dtype,
                    cudaStream_t stream) {
  if (n == 0) return;
  const float scale = 1.0f / (1.0f - p);
  FJORD_DISPATCH_DTYPE(dtype, {
    DropoutForwardKernel<scalar_t><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(x), static_cast<scalar_t*>(out), n, p, scale, seed);
    CUDA_CHECK_LAUNCH();
  });
}

void DropoutMaskedAdd(void* acc, const void* t, int64_t n, float p, uint64_t seed, DType dtype,
                      cudaStream_t stream) {
  if (n == 0) return;
  const float scale = 1.0f / (1.0f - p);
  FJORD_DISPATCH_DTYPE(dtype, {
    DropoutMaskedAddKernel<scalar_t><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<scalar_t*>(acc), static_cast<const scalar_t*>(t), n, p, scale, seed);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace fjord::lora::kernels::cuda
