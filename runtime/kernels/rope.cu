// Rotary position embedding (Hugging Face's rotate_half convention), forward
// and backward in one kernel.
//
// Fused: rotate_half, the two products and the sum in one pass; the input may
// be a strided view (B, H, T, D) such as q_proj's output viewed (B, T, H, D)
// and transposed, so no contiguous copy is made first.
// Never materialised: rotate_half(x) and the two products the reference
// holds as (B, H, T, D) tensors.
// Gradients: the backward is the same kernel applying the adjoint map
// (dx1 = g1·cos1 + g2·sin2, dx2 = g2·cos2 − g1·sin1); it writes dx, never
// accumulates. No gradient for cos and sin.
//
// One thread per VEC pairs (x[j], x[j + D/2]) of one (b, h, t) row.
//
// Shape legend: B batch, H heads, T tokens, D head dim.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int VEC, bool kTranspose>
__global__ void RopeKernel(const T* __restrict__ x,  // (B, H, T, D), strides (sxb, sxh, sxt, 1)
                           int64_t sxb, int64_t sxh, int64_t sxt,
                           T* __restrict__ out,        // (B, H, T, D) contiguous
                           const T* __restrict__ cos,  // (B, T, D), batch stride cos_sb
                           const T* __restrict__ sin,  // (B, T, D), batch stride cos_sb
                           int64_t cos_sb, int64_t heads, int64_t tokens, int64_t head_dim,
                           int64_t total) {  // B·H·T·(D/2)/VEC
  const int64_t half = head_dim / 2;
  const int64_t chunks = half / VEC;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t chunk = idx % chunks;
    const int64_t row = idx / chunks;  // b·H·T + h·T + t
    const int64_t t = row % tokens;
    const int64_t h = (row / tokens) % heads;
    const int64_t b = row / (tokens * heads);
    const int64_t j = chunk * VEC;

    const T* xr = x + b * sxb + h * sxh + t * sxt;
    T* outr = out + row * head_dim;
    const int64_t cs = b * cos_sb + t * head_dim;

    const Pack<T, VEC> x1 = LoadPack<T, VEC>(xr + j);
    const Pack<T, VEC> x2 = LoadPack<T, VEC>(xr + half + j);
    const Pack<T, VEC> c1 = LoadPack<T, VEC>(cos + cs + j);
    const Pack<T, VEC> c2 = LoadPack<T, VEC>(cos + cs + half + j);
    const Pack<T, VEC> s1 = LoadPack<T, VEC>(sin + cs + j);
    const Pack<T, VEC> s2 = LoadPack<T, VEC>(sin + cs + half + j);
    Pack<T, VEC> o1;
    Pack<T, VEC> o2;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float a = ToFloat(x1.v[k]);
      const float bb = ToFloat(x2.v[k]);
      if constexpr (kTranspose) {
        o1.v[k] = FromFloat<T>(a * ToFloat(c1.v[k]) + bb * ToFloat(s2.v[k]));
        o2.v[k] = FromFloat<T>(bb * ToFloat(c2.v[k]) - a * ToFloat(s1.v[k]));
      } else {
        o1.v[k] = FromFloat<T>(a * ToFloat(c1.v[k]) - bb * ToFloat(s1.v[k]));
        o2.v[k] = FromFloat<T>(bb * ToFloat(c2.v[k]) + a * ToFloat(s2.v[k]));
      }
    }
    StorePack<T, VEC>(outr + j, o1);
    StorePack<T, VEC>(outr + half + j, o2);
  }
}

template <typename T, int VEC>
void LaunchVec(const void* x, int64_t sxb, int64_t sxh, int64_t sxt, void* out, const void* cos,
               const void* sin, int64_t cos_sb, int64_t batch, int64_t heads, int64_t tokens,
               int64_t head_dim, bool transpose, cudaStream_t stream) {
  const int64_t total = batch * heads * tokens * (head_dim / 2 / VEC);
  if (total == 0) return;
  const unsigned int grid = GridFor(total, kThreads);
  const T* xp = static_cast<const T*>(x);
  T* op = static_cast<T*>(out);
  const T* cp = static_cast<const T*>(cos);
  const T* sp = static_cast<const T*>(sin);
  if (transpose) {
    RopeKernel<T, VEC, true><<<grid, kThreads, 0, stream>>>(xp, sxb, sxh, sxt, op, cp, sp, cos_sb,
                                                            heads, tokens, head_dim, total);
  } else {
    RopeKernel<T, VEC, false><<<grid, kThreads, 0, stream>>>(xp, sxb, sxh, sxt, op, cp, sp, cos_sb,
                                                             heads, tokens, head_dim, total);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void Launch(const void* x, int64_t sxb, int64_t sxh, int64_t sxt, void* out, const void* cos,
            const void* sin, int64_t cos_sb, int64_t batch, int64_t heads, int64_t tokens,
            int64_t head_dim, bool transpose, cudaStream_t stream) {
  constexpr int kV = kVec16<T>;
  const int64_t half = head_dim / 2;
  const bool vec = half % kV == 0 && sxb % kV == 0 && sxh % kV == 0 && sxt % kV == 0 &&
                   cos_sb % kV == 0 && Aligned(x, 16) && Aligned(out, 16) && Aligned(cos, 16) &&
                   Aligned(sin, 16);
  if (vec) {
    LaunchVec<T, kV>(x, sxb, sxh, sxt, out, cos, sin, cos_sb, batch, heads, tokens, head_dim,
                     transpose, stream);
  } else {
    LaunchVec<T, 1>(x, sxb, sxh, sxt, out, cos, sin, cos_sb, batch, heads, tokens, head_dim,
                    transpose, stream);
  }
}

}  // namespace

void RopeApply(const void* x, int64_t sxb, int64_t sxh, int64_t sxt, void* out, const void* cos,
               const void* sin, int64_t cos_batch_stride, int64_t batch, int64_t heads,
               int64_t tokens, int64_t head_dim, bool transpose, DType dtype, cudaStream_t stream) {
  if (head_dim % 2 != 0) {
    throw std::invalid_argument("RopeApply: head_dim must be even, got " +
                                std::to_string(head_dim));
  }
  if (batch == 0 || heads == 0 || tokens == 0 || head_dim == 0) return;
  FJORD_DISPATCH_DTYPE(dtype, Launch<scalar_t>(x, sxb, sxh, sxt, out, cos, sin, cos_batch_stride,
                                               batch, heads, tokens, head_dim, transpose, stream));
}

}  // namespace fjord::kernels::cuda
