// Cross-entropy over a chunk of logits rows, with the gradient written in
// place: the kernel half of the chunked linear + cross-entropy (fused_ops.cc
// runs the cuBLAS GEMMs around it).
//
// Fused: max, sum of exponentials (online, one read), the loss, and the
// gradient softmax − onehot written over the logits (a second read and one
// write), so a chunk's logits buffer becomes its dlogits buffer.
// Never materialised: softmax, log-softmax, the one-hot matrix, and any
// (N, V) tensor: the caller holds one chunk of rows at a time.
// Gradients: written (overwriting the logits), unscaled (the caller scales
// by grad_output). Ignored rows (label == ignore_index) get loss 0 and a zero
// gradient row.
//
// One block per row; each thread keeps a running (max, sum) over its packs,
// merged across the block at the end.
//
// Shape legend: rows (a chunk of tokens), V vocab.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

constexpr int kThreads = 512;

// Running log-sum-exp state: the sum of exp(v − max) over the values seen.
struct MaxSum {
  float max;
  float sum;
};

__device__ __forceinline__ MaxSum Merge(MaxSum a, MaxSum b) {
  if (a.max == -CUDART_INF_F) return b;
  if (b.max == -CUDART_INF_F) return a;
  const float m = fmaxf(a.max, b.max);
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

__device__ __forceinline__ MaxSum Add(MaxSum s, float v) {
  if (v == -CUDART_INF_F) return s;                             // exp(−inf) adds nothing
  if (v > s.max) return {v, s.sum * __expf(s.max - v) + 1.0f};  // s.max = −inf: 0·0 + 1
  return {s.max, s.sum + __expf(v - s.max)};
}

__device__ __forceinline__ MaxSum BlockMerge(MaxSum s) {
  __shared__ float max_scratch[32];
  __shared__ float sum_scratch[32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, s.max, offset),
                 __shfl_xor_sync(0xffffffffu, s.sum, offset)};
    s = Merge(s, other);
  }
  __syncthreads();
  if (lane == 0) {
    max_scratch[warp] = s.max;
    sum_scratch[warp] = s.sum;
  }
  __syncthreads();
  s = lane < warps ? MaxSum{max_scratch[lane], sum_scratch[lane]} : MaxSum{-CUDART_INF_F, 0.0f};
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, s.max, offset),
                 __shfl_xor_sync(0xffffffffu, s.sum, offset)};
    s = Merge(s, other);
  }
  return s;
}

template <typename T, int VEC>
__global__ void CrossEntropyRowsKernel(T* logits,  // (rows, V), row stride ld; overwritten
                                       int64_t ld,
                                       const int64_t* __restrict__ labels,  // (rows)
                                       float* __restrict__ loss,            // (rows)
                                       int64_t vocab, bool write_grad, int64_t ignore_index) {
  const int64_t row = blockIdx.x;
  T* lr = logits + row * ld;
  const int64_t label = labels[row];
  const int64_t first = static_cast<int64_t>(threadIdx.x) * VEC;
  const int64_t step = static_cast<int64_t>(blockDim.x) * VEC;

  if (label == ignore_index) {  // the same branch for the whole block
    if (threadIdx.x == 0) loss[row] = 0.0f;
    if (write_grad) {
      Pack<T, VEC> zero;
#pragma unroll
      for (int k = 0; k < VEC; ++k) zero.v[k] = FromFloat<T>(0.0f);
      for (int64_t i = first; i < vocab; i += step) StorePack<T, VEC>(lr + i, zero);
    }
    return;
  }

  // Read before any thread can overwrite it (BlockMerge's barriers come first).
  const float target = threadIdx.x == 0 ? ToFloat(lr[label]) : 0.0f;

  MaxSum s{-CUDART_INF_F, 0.0f};
  for (int64_t i = first; i < vocab; i += step) {
    const Pack<T, VEC> p = LoadPack<T, VEC>(lr + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) s = Add(s, ToFloat(p.v[k]));
  }
  s = BlockMerge(s);
  const float lse = s.max + __logf(s.sum);
  if (threadIdx.x == 0) loss[row] = lse - target;

  if (write_grad) {
    for (int64_t i = first; i < vocab; i += step) {
      Pack<T, VEC> p = LoadPack<T, VEC>(lr + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        float g = __expf(ToFloat(p.v[k]) - lse);
        if (i + k == label) g -= 1.0f;
        p.v[k] = FromFloat<T>(g);
      }
      StorePack<T, VEC>(lr + i, p);
    }
  }
}

template <typename T>
void Launch(void* logits, int64_t ld, const int64_t* labels, float* loss, int64_t rows,
            int64_t vocab, bool write_grad, int64_t ignore_index, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const bool vec = vocab % kV == 0 && ld % kV == 0 && Aligned(logits, 16);
  const dim3 grid(static_cast<unsigned int>(rows));
  T* lp = static_cast<T*>(logits);
  if (vec) {
    CrossEntropyRowsKernel<T, kV><<<grid, ThreadsForRow(vocab / kV, kThreads), 0, stream>>>(
        lp, ld, labels, loss, vocab, write_grad, ignore_index);
  } else {
    CrossEntropyRowsKernel<T, 1><<<grid, ThreadsForRow(vocab, kThreads), 0, stream>>>(
        lp, ld, labels, loss, vocab, write_grad, ignore_index);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void CrossEntropyRows(void* logits, int64_t ld, const int64_t* labels, float* loss, int64_t rows,
                      int64_t vocab, bool write_grad, int64_t ignore_index, DType dtype,
                      cudaStream_t stream) {
  if (rows == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, Launch<scalar_t>(logits, ld, labels, loss, rows, vocab, write_grad,
                                               ignore_index, stream));
}

}  // namespace fjord::kernels::cuda
