// C-style launchers of lora/kernels' CUDA kernels (no LibTorch; see
// runtime/kernels/launchers.h for the conventions: raw pointers, dtype tag,
// stream; they enqueue and return, and throw fjord::kernels::CudaError on a
// failed launch).
//
// Dropout on the adapter input, by a counter-based hash: element i of a
// (N, in) tensor is kept iff uniform(seed, i) >= p, where uniform takes the
// top 24 bits of SplitMix64(seed XOR SplitMix64(i)) as a fraction of 2^24.
// The mask is a pure function of (seed, i), so the backward regenerates it
// instead of storing it.
#ifndef FJORD_LORA_KERNELS_LORA_LAUNCHERS_H_
#define FJORD_LORA_KERNELS_LORA_LAUNCHERS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "runtime/kernels/launchers.h"

namespace fjord::lora::kernels::cuda {

using ::fjord::kernels::cuda::DType;

// out[i] = keep(seed, i) ? x[i] / (1 − p) : 0, for i < n. out may alias x.
// p in [0, 1).
void DropoutForward(const void* x, void* out, int64_t n, float p, uint64_t seed, DType dtype,
                    cudaStream_t stream);

// acc[i] += keep(seed, i) ? t[i] / (1 − p) : 0, for i < n (one rounding to
// the dtype per element). The backward of DropoutForward, accumulated.
void DropoutMaskedAdd(void* acc, const void* t, int64_t n, float p, uint64_t seed, DType dtype,
                      cudaStream_t stream);

}  // namespace fjord::lora::kernels::cuda

#endif  // FJORD_LORA_KERNELS_LORA_LAUNCHERS_H_
