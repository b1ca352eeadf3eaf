// SwiGLU: y = silu(gate)·up, forward and backward.
//
// Fused: the sigmoid, the SiLU and the product in one elementwise pass
// (forward); both input gradients from one read of dy, gate and up
// (backward).
// Never materialised: silu(gate) and sigmoid(gate), which the reference's
// autograd keeps as (N, I) tensors; nothing is saved but gate and up.
// Gradients: dgate and dup are written, never accumulated.
//
// Grid-stride loop over 16-byte packs (elementwise fallback when sizes or
// pointers are not aligned).
//
// Shape legend: n elements (N·I flattened).
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Sigmoid(float v) { return 1.0f / (1.0f + __expf(-v)); }

template <typename T, int VEC>
__global__ void SwiGluForwardKernel(const T* __restrict__ gate, const T* __restrict__ up,
                                    T* __restrict__ y, int64_t packs) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Pack<T, VEC> g = LoadPack<T, VEC>(gate + p * VEC);
    const Pack<T, VEC> u = LoadPack<T, VEC>(up + p * VEC);
    Pack<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float gf = ToFloat(g.v[k]);
      // As the reference: silu(g) is stored in T before the product.
      const float silu = RoundTo<T>(gf * Sigmoid(gf));
      out.v[k] = FromFloat<T>(silu * ToFloat(u.v[k]));
    }
    StorePack<T, VEC>(y + p * VEC, out);
  }
}

template <typename T, int VEC>
__global__ void SwiGluBackwardKernel(const T* dy,  // may alias dgate
                                     const T* __restrict__ gate, const T* __restrict__ up, T* dgate,
                                     T* __restrict__ dup, int64_t packs) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Pack<T, VEC> d = LoadPack<T, VEC>(dy + p * VEC);
    const Pack<T, VEC> g = LoadPack<T, VEC>(gate + p * VEC);
    const Pack<T, VEC> u = LoadPack<T, VEC>(up + p * VEC);
    Pack<T, VEC> dg;
    Pack<T, VEC> du;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float df = ToFloat(d.v[k]);
      const float gf = ToFloat(g.v[k]);
      const float s = Sigmoid(gf);
      const float silu = RoundTo<T>(gf * s);
      const float dsilu = RoundTo<T>(df * ToFloat(u.v[k]));
      dg.v[k] = FromFloat<T>(dsilu * s * (1.0f + gf * (1.0f - s)));
      du.v[k] = FromFloat<T>(df * silu);
    }
    StorePack<T, VEC>(dgate + p * VEC, dg);
    StorePack<T, VEC>(dup + p * VEC, du);
  }
}

template <typename T>
void LaunchForward(const void* gate, const void* up, void* y, int64_t n, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const bool vec = n % kV == 0 && Aligned(gate, 16) && Aligned(up, 16) && Aligned(y, 16);
  const T* g = static_cast<const T*>(gate);
  const T* u = static_cast<const T*>(up);
  T* out = static_cast<T*>(y);
  if (vec) {
    SwiGluForwardKernel<T, kV>
        <<<GridFor(n / kV, kThreads), kThreads, 0, stream>>>(g, u, out, n / kV);
  } else {
    SwiGluForwardKernel<T, 1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(g, u, out, n);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void LaunchBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                    int64_t n, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const bool vec = n % kV == 0 && Aligned(dy, 16) && Aligned(gate, 16) && Aligned(up, 16) &&
                   Aligned(dgate, 16) && Aligned(dup, 16);
  const T* d = static_cast<const T*>(dy);
  const T* g = static_cast<const T*>(gate);
  const T* u = static_cast<const T*>(up);
  T* dg = static_cast<T*>(dgate);
  T* du = static_cast<T*>(dup);
  if (vec) {
    SwiGluBackwardKernel<T, kV>
        <<<GridFor(n / kV, kThreads), kThreads, 0, stream>>>(d, g, u, dg, du, n / kV);
  } else {
    SwiGluBackwardKernel<T, 1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(d, g, u, dg, du, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void SwiGluForward(const void* gate, const void* up, void* y, int64_t n, DType dtype,
                   cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, LaunchForward<scalar_t>(gate, up, y, n, stream));
}

void SwiGluBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                    int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, LaunchBackward<scalar_t>(dy, gate, up, dgate, dup, n, stream));
}

}  // namespace fjord::kernels::cuda
