// Device helpers shared by runtime/kernels' .cu files (and lora/kernels'):
// dtype conversion, 16-byte vector packs, warp and block reductions, and the
// dtype switch for launchers. Included by .cu files only (nvcc).
#ifndef FJORD_RUNTIME_KERNELS_CUDA_COMMON_H_
#define FJORD_RUNTIME_KERNELS_CUDA_COMMON_H_

#ifndef __CUDACC__
#error "cuda_common.h is for .cu files compiled by nvcc"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {

// ---- Conversions: arithmetic is always fp32; storage is T. ----

template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) {
  return __half2float(v);
}

// Round to nearest even, as LibTorch's casts do.
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

// v rounded to T's precision and back: what a reference computes when it
// stores an intermediate in T.
template <typename T>
__device__ __forceinline__ float RoundTo(float v) {
  return ToFloat<T>(FromFloat<T>(v));
}

// ---- Vector packs: N elements of T moved as one aligned access. ----

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 16-byte access.
template <typename T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> LoadPack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void StorePack(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

// True when every pointer is aligned to `bytes`.
inline bool Aligned(const void* p, int bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes) == 0;
}

// ---- Reductions (blockDim.x a multiple of 32, at most 1024). ----

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block; every thread gets the result. Safe to call
// repeatedly in one kernel (the leading barrier protects the scratch).
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float scratch[32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

// Threads per block for a row of `packs` vector packs: a multiple of 32 in
// [32, max_threads].
inline int ThreadsForRow(int64_t packs, int max_threads) {
  int64_t t = (packs + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > max_threads) t = max_threads;
  return static_cast<int>(t);
}

// Blocks for a grid-stride loop over `work` items with `threads` per block.
inline unsigned int GridFor(int64_t work, int threads) {
  int64_t blocks = (work + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(MultiprocessorCount()) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks);
}

}  // namespace fjord::kernels::cuda

// Calls `__VA_ARGS__` (a generic lambda body's call, e.g. Launch(scalar_t{}))
// with `scalar_t` bound to the C++ type of `dtype`.
#define FJORD_DISPATCH_DTYPE(dtype, ...)                                    \
  switch (dtype) {                                                          \
    case ::fjord::kernels::cuda::DType::kF32: {                             \
      using scalar_t = float;                                               \
      __VA_ARGS__;                                                          \
      break;                                                                \
    }                                                                       \
    case ::fjord::kernels::cuda::DType::kBF16: {                            \
      using scalar_t = __nv_bfloat16;                                       \
      __VA_ARGS__;                                                          \
      break;                                                                \
    }                                                                       \
    case ::fjord::kernels::cuda::DType::kF16: {                             \
      using scalar_t = __half;                                              \
      __VA_ARGS__;                                                          \
      break;                                                                \
    }                                                                       \
    default:                                                                \
      throw std::invalid_argument("fjord kernels: unsupported dtype tag " + \
                                  std::to_string(static_cast<int>(dtype))); \
  }

#endif  // FJORD_RUNTIME_KERNELS_CUDA_COMMON_H_
