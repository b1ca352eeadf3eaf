// GeGLU (Gemma's MLP): y = gelu_tanh(gate)·up, forward and backward, with
// GELU's tanh approximation as PyTorch's gelu(approximate="tanh") computes it:
//   gelu(g) = 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))).
//
// Fused: the cubic, the tanh, the GELU and the product in one elementwise
// pass (forward); both input gradients from one read of dy, gate and up
// (backward, the tanh recomputed).
// Never materialised: gelu(gate) and its derivative, which the reference's
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
constexpr float kBeta = 0.7978845608028654f;  // √(2/π)
constexpr float kKappa = 0.044715f;

__device__ __forceinline__ float GeluTanh(float g) {
  const float inner = kBeta * (g + kKappa * g * g * g);
  return 0.5f * g * (1.0f + tanhf(inner));
}

// d gelu(g) / dg, as PyTorch's GeluBackward (tanh) writes it.
__device__ __forceinline__ float GeluTanhGrad(float g) {
  const float g2 = g * g;
  const float t = tanhf(kBeta * (g + kKappa * g2 * g));
  const float left_derivative = 0.5f * (1.0f + t);
  const float right_derivative = 0.5f * g * (1.0f - t * t) * kBeta * (1.0f + 3.0f * kKappa * g2);
  return left_derivative + right_derivative;
}

template <typename T, int VEC>
__global__ void GeGluForwardKernel(const T* __restrict__ gate, const T* __restrict__ up,
                                   T* __restrict__ y, int64_t packs) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Pack<T, VEC> g = LoadPack<T, VEC>(gate + p * VEC);
    const Pack<T, VEC> u = LoadPack<T, VEC>(up + p * VEC);
    Pack<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      // As the reference: gelu(g) is stored in T before the product.
      const float gelu = RoundTo<T>(GeluTanh(ToFloat(g.v[k])));
      out.v[k] = FromFloat<T>(gelu * ToFloat(u.v[k]));
    }
    StorePack<T, VEC>(y + p * VEC, out);
  }
}

template <typename T, int VEC>
__global__ void GeGluBackwardKernel(const T* dy,  // may alias dgate
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
      const float gelu = RoundTo<T>(GeluTanh(gf));
      const float dgelu = RoundTo<T>(df * ToFloat(u.v[k]));  // the product's gradient, in T
      dg.v[k] = FromFloat<T>(dgelu * GeluTanhGrad(gf));
      du.v[k] = FromFloat<T>(df * gelu);
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
    GeGluForwardKernel<T, kV>
        <<<GridFor(n / kV, kThreads), kThreads, 0, stream>>>(g, u, out, n / kV);
  } else {
    GeGluForwardKernel<T, 1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(g, u, out, n);
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
    GeGluBackwardKernel<T, kV>
        <<<GridFor(n / kV, kThreads), kThreads, 0, stream>>>(d, g, u, dg, du, n / kV);
  } else {
    GeGluBackwardKernel<T, 1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(d, g, u, dg, du, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void GeGluForward(const void* gate, const void* up, void* y, int64_t n, DType dtype,
                  cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, LaunchForward<scalar_t>(gate, up, y, n, stream));
}

void GeGluBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                   int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, LaunchBackward<scalar_t>(dy, gate, up, dgate, dup, n, stream));
}

}  // namespace fjord::kernels::cuda
