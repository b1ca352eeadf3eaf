// RMSNorm forward and backward, Llama's (x̂ rounded to T, then times w) or
// Gemma's (x̂·(1 + w) in fp32, rounded once; `gemma`).
//
// Fused: the sum of squares, the scaling and the weight multiply in one pass
// per row (forward); dx and the per-block dweight partials in one pass per row
// (backward), then one small column-sum kernel for dweight.
// Never materialised: the fp32 copy of x and the normalised row (the reference
// holds both as (N, C) tensors); only rstd (N floats) is saved for backward.
// Gradients: dx and dweight are written, never accumulated; dweight is the
// sum of per-block partials in a fixed order (deterministic, no atomics).
//
// One block per row (forward); a fixed grid of blocks striding over rows
// (backward), each thread owning the same columns in every row so that its
// dweight partial stays in shared memory (or, for very wide rows, in its own
// slice of global scratch). 16-byte accesses when rows and pointers allow.
// Both kernels are in-place-safe (y may alias x; dx may alias dy): each
// element is read and written by the same thread, after the row's reduction.
//
// Shape legend: N rows, C columns.
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

constexpr int kMaxThreads = 512;
// dweight partials live in shared memory up to this many bytes per block.
constexpr int64_t kMaxSharedPartialBytes = 48 * 1024;

template <typename T, int VEC, bool kGemma>
__global__ void RmsNormForwardKernel(const T* x,                    // (N, C)
                                     const T* __restrict__ w,       // (C)
                                     T* y,                          // (N, C), may alias x
                                     float* __restrict__ rstd_out,  // (N) or null
                                     int64_t cols, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  const int64_t step = static_cast<int64_t>(blockDim.x) * VEC;

  float sum_sq = 0.0f;
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * VEC; i < cols; i += step) {
    const Pack<T, VEC> p = LoadPack<T, VEC>(xr + i);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float f = ToFloat(p.v[k]);
      sum_sq += f * f;
    }
  }
  sum_sq = BlockSum(sum_sq);
  const float rstd = rsqrtf(sum_sq / static_cast<float>(cols) + eps);
  if (threadIdx.x == 0 && rstd_out != nullptr) rstd_out[row] = rstd;

  for (int64_t i = static_cast<int64_t>(threadIdx.x) * VEC; i < cols; i += step) {
    const Pack<T, VEC> p = LoadPack<T, VEC>(xr + i);
    const Pack<T, VEC> pw = LoadPack<T, VEC>(w + i);
    Pack<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      if constexpr (kGemma) {
        // Gemma: scale by (1 + w) in fp32, round once.
        out.v[k] = FromFloat<T>(ToFloat(p.v[k]) * rstd * (1.0f + ToFloat(pw.v[k])));
      } else {
        // As the reference: normalise in fp32, round to T, then scale by w.
        const float n = RoundTo<T>(ToFloat(p.v[k]) * rstd);
        out.v[k] = FromFloat<T>(n * ToFloat(pw.v[k]));
      }
    }
    StorePack<T, VEC>(yr + i, out);
  }
}

template <typename T, int VEC, bool kGemma>
__global__ void RmsNormBackwardKernel(const T* dy,                     // (N, C)
                                      const T* __restrict__ x,         // (N, C)
                                      const T* __restrict__ w,         // (C)
                                      const float* __restrict__ rstd,  // (N)
                                      T* dx,           // (N, C) or null; may alias dy
                                      float* partial,  // (gridDim.x, C) or null
                                      bool partial_in_shared, int64_t rows, int64_t cols) {
  extern __shared__ float shared_partial[];  // (C) when partial_in_shared
  float* acc = nullptr;
  if (partial != nullptr) {
    acc = partial_in_shared ? shared_partial : partial + static_cast<int64_t>(blockIdx.x) * cols;
  }
  const int64_t first = static_cast<int64_t>(threadIdx.x) * VEC;
  const int64_t step = static_cast<int64_t>(blockDim.x) * VEC;
  if (acc != nullptr) {
    for (int64_t i = first; i < cols; i += step) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[i + k] = 0.0f;
    }
  }
  const float inv_cols = 1.0f / static_cast<float>(cols);

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* dyr = dy + row * cols;
    const T* xr = x + row * cols;
    const float r = rstd[row];

    // Pass 1: Σ dn·n over the row, and this thread's columns of dweight.
    float dot = 0.0f;
    for (int64_t i = first; i < cols; i += step) {
      const Pack<T, VEC> pdy = LoadPack<T, VEC>(dyr + i);
      const Pack<T, VEC> px = LoadPack<T, VEC>(xr + i);
      const Pack<T, VEC> pw = LoadPack<T, VEC>(w + i);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float g = ToFloat(pdy.v[k]);
        const float n = ToFloat(px.v[k]) * r;
        // Gemma's graph is fp32 from the cast on: nothing rounds but dx and dw.
        const float dn = kGemma ? g * (1.0f + ToFloat(pw.v[k])) : RoundTo<T>(g * ToFloat(pw.v[k]));
        dot += dn * n;
        if (acc != nullptr) acc[i + k] += g * (kGemma ? n : RoundTo<T>(n));
      }
    }
    dot = BlockSum(dot) * inv_cols;

    // Pass 2: dx = r·(dn − n·mean(dn·n)).
    if (dx != nullptr) {
      T* dxr = dx + row * cols;
      for (int64_t i = first; i < cols; i += step) {
        const Pack<T, VEC> pdy = LoadPack<T, VEC>(dyr + i);
        const Pack<T, VEC> px = LoadPack<T, VEC>(xr + i);
        const Pack<T, VEC> pw = LoadPack<T, VEC>(w + i);
        Pack<T, VEC> out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float n = ToFloat(px.v[k]) * r;
          const float g = ToFloat(pdy.v[k]);
          const float dn =
              kGemma ? g * (1.0f + ToFloat(pw.v[k])) : RoundTo<T>(g * ToFloat(pw.v[k]));
          out.v[k] = FromFloat<T>(r * (dn - n * dot));
        }
        StorePack<T, VEC>(dxr + i, out);
      }
    }
  }

  if (acc != nullptr && partial_in_shared) {
    float* dst = partial + static_cast<int64_t>(blockIdx.x) * cols;
    for (int64_t i = first; i < cols; i += step) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) dst[i + k] = acc[i + k];
    }
  }
}

// out[c] = Σ_p partial[p][c] in order p = 0, 1, ...; zeros when parts == 0.
template <typename T>
__global__ void ColumnSumKernel(const float* __restrict__ partial, int parts, int64_t cols,
                                T* __restrict__ out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int p = 0; p < parts; ++p) s += partial[static_cast<int64_t>(p) * cols + c];
  out[c] = FromFloat<T>(s);
}

int BackwardBlocks(int64_t rows) {
  int64_t blocks = static_cast<int64_t>(MultiprocessorCount()) * 2;
  if (blocks > rows) blocks = rows;
  if (blocks < 1) blocks = 1;
  return static_cast<int>(blocks);
}

template <typename T, bool kGemma>
void LaunchForward(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t cols,
                   float eps, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const bool vec = cols % kV == 0 && Aligned(x, 16) && Aligned(w, 16) && Aligned(y, 16);
  const dim3 grid(static_cast<unsigned int>(rows));
  if (vec) {
    const int threads = ThreadsForRow(cols / kV, kMaxThreads);
    RmsNormForwardKernel<T, kV, kGemma><<<grid, threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), rstd, cols, eps);
  } else {
    const int threads = ThreadsForRow(cols, kMaxThreads);
    RmsNormForwardKernel<T, 1, kGemma><<<grid, threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), rstd, cols, eps);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T, bool kGemma>
void LaunchBackward(const void* dy, const void* x, const void* w, const float* rstd, void* dx,
                    void* dw, float* partial, int64_t rows, int64_t cols, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const int blocks = BackwardBlocks(rows);
  float* part = dw != nullptr ? partial : nullptr;
  if (rows > 0 && (dx != nullptr || part != nullptr)) {
    const bool in_shared = part != nullptr && cols * 4 <= kMaxSharedPartialBytes;
    const size_t shared_bytes = in_shared ? static_cast<size_t>(cols) * sizeof(float) : 0;
    const bool vec = cols % kV == 0 && Aligned(dy, 16) && Aligned(x, 16) && Aligned(w, 16) &&
                     (dx == nullptr || Aligned(dx, 16));
    if (vec) {
      const int threads = ThreadsForRow(cols / kV, kMaxThreads);
      RmsNormBackwardKernel<T, kV, kGemma><<<blocks, threads, shared_bytes, stream>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(w), rstd,
          static_cast<T*>(dx), part, in_shared, rows, cols);
    } else {
      const int threads = ThreadsForRow(cols, kMaxThreads);
      RmsNormBackwardKernel<T, 1, kGemma><<<blocks, threads, shared_bytes, stream>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(w), rstd,
          static_cast<T*>(dx), part, in_shared, rows, cols);
    }
    CUDA_CHECK_LAUNCH();
  }
  if (dw != nullptr) {
    const int parts = rows > 0 ? blocks : 0;
    const int threads = 256;
    const unsigned int grid = static_cast<unsigned int>((cols + threads - 1) / threads);
    ColumnSumKernel<T><<<grid, threads, 0, stream>>>(partial, parts, cols, static_cast<T*>(dw));
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void RmsNormForward(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t cols,
                    float eps, DType dtype, cudaStream_t stream, bool gemma) {
  if (rows == 0 || cols == 0) return;
  if (gemma) {
    FJORD_DISPATCH_DTYPE(dtype,
                         LaunchForward<scalar_t, true>(x, w, y, rstd, rows, cols, eps, stream));
  } else {
    FJORD_DISPATCH_DTYPE(dtype,
                         LaunchForward<scalar_t, false>(x, w, y, rstd, rows, cols, eps, stream));
  }
}

int64_t RmsNormBackwardScratchSize(int64_t rows, int64_t cols) {
  return static_cast<int64_t>(BackwardBlocks(rows)) * cols;
}

void RmsNormBackward(const void* dy, const void* x, const void* w, const float* rstd, void* dx,
                     void* dw, float* partial, int64_t rows, int64_t cols, DType dtype,
                     cudaStream_t stream, bool gemma) {
  if (cols == 0) return;
  if (gemma) {
    FJORD_DISPATCH_DTYPE(
        dtype, LaunchBackward<scalar_t, true>(dy, x, w, rstd, dx, dw, partial, rows, cols, stream));
  } else {
    FJORD_DISPATCH_DTYPE(dtype, LaunchBackward<scalar_t, false>(dy, x, w, rstd, dx, dw, partial,
                                                                rows, cols, stream));
  }
}

}  // namespace fjord::kernels::cuda
