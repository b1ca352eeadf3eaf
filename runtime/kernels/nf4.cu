// NF4 dequantization (QLoRA's 4-bit NormalFloat, bitsandbytes' layout):
// out[i] = code[q_i]·absmax[i / blocksize], q_i the 4-bit index of element i
// (high nibble of byte i/2 for even i, low nibble for odd i).
//
// Fused: nibble unpacking, the code lookup, the absmax scale and the cast to
// the output dtype in one pass over the packed bytes.
// Never materialised: the index tensor, the looked-up code values and the
// repeated absmax tensor (the reference holds each as a (n) tensor of 4-byte
// elements); the kernel writes only the output.
// Gradients: none. The quantized weight is frozen; there is no backward.
//
// Each thread loads 4 packed bytes at a time (one 32-bit load) and writes
// their 8 outputs as one 16-byte store (bf16, fp16) or two (fp32), in a
// grid-stride loop, so a warp reads 128 contiguous bytes and writes 512 (or
// 1024). The 16-entry code sits in shared memory (16 banks, conflict-free).
// When blocksize is a multiple of 8 the 8 outputs of a step share one absmax
// (one load per step, a shift for power-of-two block sizes); otherwise each
// byte loads its own. Elements past the last whole step (numel % 8 of them,
// including the lone high nibble of an odd numel) are done one per thread
// after the loop; when the pointers are not aligned for the vector accesses,
// every element takes that path.
//
// The product is one fp32 multiply rounded to nearest even with subnormals
// kept (explicit PTX: --use_fast_math would flush them), then one
// round-to-nearest-even cast: bit for bit the reference's values * scale
// followed by .to(dtype).
//
// Shape legend: n elements (the weight's numel, flattened).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Packed bytes per vector step (one 32-bit load) and the outputs they hold.
constexpr int kStepBytes = 4;
constexpr int kStepOut = 2 * kStepBytes;

// a·b in fp32, rounded to nearest even, subnormal results kept.
__device__ __forceinline__ float MulRn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// kSharedScale: blocksize % 8 == 0, so the 8 outputs of a step lie in one
// absmax block: step p's block is p >> step_shift (step_shift =
// log2(blocksize / 8) for power-of-two block sizes) or p / (blocksize / 8)
// (step_shift < 0).
template <typename T, bool kSharedScale>
__global__ void __launch_bounds__(kThreads)
    Nf4DequantizeKernel(const uint8_t* __restrict__ packed,  // (ceil(n / 2))
                        const float* __restrict__ absmax,    // (ceil(n / blocksize))
                        const float* __restrict__ code,      // (16)
                        T* __restrict__ out,                 // (n)
                        int64_t n, int64_t blocksize, int64_t steps, int step_shift) {
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
  __syncthreads();

  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const uint32_t* words = reinterpret_cast<const uint32_t*>(packed);  // 4-byte aligned
  for (int64_t p = first; p < steps; p += stride) {
    // Little-endian: byte k of the step is bits [8k, 8k + 8) of the word.
    const uint32_t w = words[p];
    Pack<T, kStepOut> v;
    if constexpr (kSharedScale) {
      const int64_t block = step_shift >= 0 ? p >> step_shift : p / (blocksize / kStepOut);
      const float s = absmax[block];
#pragma unroll
      for (int k = 0; k < kStepBytes; ++k) {
        const uint32_t byte = w >> (8 * k);
        v.v[2 * k] = FromFloat<T>(MulRn(table[(byte >> 4) & 0xFu], s));
        v.v[2 * k + 1] = FromFloat<T>(MulRn(table[byte & 0xFu], s));
      }
    } else {
#pragma unroll
      for (int k = 0; k < kStepBytes; ++k) {
        const uint32_t byte = w >> (8 * k);
        // blocksize is even: both nibbles of a byte share a block.
        const float s = absmax[(p * kStepOut + 2 * k) / blocksize];
        v.v[2 * k] = FromFloat<T>(MulRn(table[(byte >> 4) & 0xFu], s));
        v.v[2 * k + 1] = FromFloat<T>(MulRn(table[byte & 0xFu], s));
      }
    }
    StorePack<T, kStepOut>(out + p * kStepOut, v);
  }

  // The elements after the last whole step, one per thread.
  for (int64_t i = steps * kStepOut + first; i < n; i += stride) {
    const uint32_t byte = packed[i >> 1];
    const uint32_t q = (i & 1) ? (byte & 0xFu) : (byte >> 4);
    out[i] = FromFloat<T>(MulRn(table[q], absmax[i / blocksize]));
  }
}

// log2(v) when v is a power of two, else -1.
int Log2IfPowerOfTwo(int64_t v) {
  if (v <= 0 || (v & (v - 1)) != 0) return -1;
  int s = 0;
  while ((int64_t{1} << s) != v) ++s;
  return s;
}

template <typename T>
void Launch(const uint8_t* packed, const float* absmax, const float* code, void* out, int64_t n,
            int64_t blocksize, cudaStream_t stream) {
  T* y = static_cast<T*>(out);
  const bool vec =
      Aligned(packed, kStepBytes) && Aligned(out, static_cast<int>(sizeof(T)) * kStepOut);
  const int64_t steps = vec ? n / kStepOut : 0;
  const int64_t rest = n - steps * kStepOut;
  const unsigned int grid = GridFor(std::max(steps, rest), kThreads);
  if (blocksize % kStepOut == 0) {
    const int shift = Log2IfPowerOfTwo(blocksize / kStepOut);
    Nf4DequantizeKernel<T, true>
        <<<grid, kThreads, 0, stream>>>(packed, absmax, code, y, n, blocksize, steps, shift);
  } else {
    Nf4DequantizeKernel<T, false>
        <<<grid, kThreads, 0, stream>>>(packed, absmax, code, y, n, blocksize, steps, -1);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void Nf4Dequantize(const uint8_t* packed, const float* absmax, const float* code, void* out,
                   int64_t numel, int64_t blocksize, DType dtype, cudaStream_t stream) {
  if (numel < 0) {
    throw std::invalid_argument("Nf4Dequantize: numel must be >= 0, got " + std::to_string(numel));
  }
  if (blocksize <= 0 || blocksize % 2 != 0) {
    throw std::invalid_argument("Nf4Dequantize: blocksize must be even and positive, got " +
                                std::to_string(blocksize));
  }
  if (numel == 0) return;
  FJORD_DISPATCH_DTYPE(dtype,
                       Launch<scalar_t>(packed, absmax, code, out, numel, blocksize, stream));
}

}  // namespace fjord::kernels::cuda
