// Gated linear units, forward and backward: y = act(gate)·up with
//   SwiGLU: act = silu(g) = g·sigmoid(g);
//   GeGLU (Gemma): act = GELU with the tanh approximation, as PyTorch's
//   gelu(approximate="tanh"): 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))).
//
// Fused: the activation and the product in one elementwise pass (forward);
// both input gradients from one read of dy, gate and up (backward, the
// activation recomputed).
// Never materialised: act(gate) and its derivative, which the reference's
// autograd keeps as (N, I) tensors; nothing is saved but gate and up.
// Gradients: dgate and dup are written, never accumulated.
// Rounding as the references: act(g) is stored in T before the product, and
// the product's gradient dy·up is rounded to T before act's derivative.
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

struct Silu {
  static __device__ __forceinline__ float Sigmoid(float v) { return 1.0f / (1.0f + __expf(-v)); }
  static __device__ __forceinline__ float Act(float g) { return g * Sigmoid(g); }
  // dact·silu'(g).
  static __device__ __forceinline__ float Back(float dact, float g) {
    const float s = Sigmoid(g);
    return dact * s * (1.0f + g * (1.0f - s));
  }
};

struct GeluTanh {
  static constexpr float kBeta = 0.7978845608028654f;  // √(2/π)
  static constexpr float kKappa = 0.044715f;
  static __device__ __forceinline__ float Act(float g) {
    return 0.5f * g * (1.0f + tanhf(kBeta * (g + kKappa * g * g * g)));
  }
  // dact·gelu'(g), the derivative as PyTorch's GeluBackward (tanh) writes it.
  static __device__ __forceinline__ float Back(float dact, float g) {
    const float g2 = g * g;
    const float t = tanhf(kBeta * (g + kKappa * g2 * g));
    const float left = 0.5f * (1.0f + t);
    const float right = 0.5f * g * (1.0f - t * t) * kBeta * (1.0f + 3.0f * kKappa * g2);
    return dact * (left + right);
  }
};

template <typename Act, typename T, int VEC>
__global__ void GluForwardKernel(const T* __restrict__ gate, const T* __restrict__ up,
                                 T* __restrict__ y, int64_t packs) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Pack<T, VEC> g = LoadPack<T, VEC>(gate + p * VEC);
    const Pack<T, VEC> u = LoadPack<T, VEC>(up + p * VEC);
    Pack<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float a = RoundTo<T>(Act::Act(ToFloat(g.v[k])));
      out.v[k] = FromFloat<T>(a * ToFloat(u.v[k]));
    }
    StorePack<T, VEC>(y + p * VEC, out);
  }
}

template <typename Act, typename T, int VEC>
__global__ void GluBackwardKernel(const T* dy,  // may alias dgate
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
      const float a = RoundTo<T>(Act::Act(gf));
      const float dact = RoundTo<T>(df * ToFloat(u.v[k]));
      dg.v[k] = FromFloat<T>(Act::Back(dact, gf));
      du.v[k] = FromFloat<T>(df * a);
    }
    StorePack<T, VEC>(dgate + p * VEC, dg);
    StorePack<T, VEC>(dup + p * VEC, du);
  }
}

template <typename Act, typename T>
void LaunchForward(const void* gate, const void* up, void* y, int64_t n, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const bool vec = n % kV == 0 && Aligned(gate, 16) && Aligned(up, 16) && Aligned(y, 16);
  const T* g = static_cast<const T*>(gate);
  const T* u = static_cast<const T*>(up);
  T* out = static_cast<T*>(y);
  if (vec) {
    GluForwardKernel<Act, T, kV>
        <<<GridFor(n / kV, kThreads), kThreads, 0, stream>>>(g, u, out, n / kV);
  } else {
    GluForwardKernel<Act, T, 1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(g, u, out, n);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename Act, typename T>
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
    GluBackwardKernel<Act, T, kV>
        <<<GridFor(n / kV, kThreads), kThreads, 0, stream>>>(d, g, u, dg, du, n / kV);
  } else {
    GluBackwardKernel<Act, T, 1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(d, g, u, dg, du, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void SwiGluForward(const void* gate, const void* up, void* y, int64_t n, DType dtype,
                   cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, (LaunchForward<Silu, scalar_t>(gate, up, y, n, stream)));
}

void SwiGluBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                    int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype,
                       (LaunchBackward<Silu, scalar_t>(dy, gate, up, dgate, dup, n, stream)));
}

void GeGluForward(const void* gate, const void* up, void* y, int64_t n, DType dtype,
                  cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, (LaunchForward<GeluTanh, scalar_t>(gate, up, y, n, stream)));
}

void GeGluBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                   int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  FJORD_DISPATCH_DTYPE(dtype,
                       (LaunchBackward<GeluTanh, scalar_t>(dy, gate, up, dgate, dup, n, stream)));
}

}  // namespace fjord::kernels::cuda
