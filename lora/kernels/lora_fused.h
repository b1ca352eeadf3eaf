// The fused CUDA implementation of lora/kernels/lora_ops.h, with custom
// autograd. lora_ops.h's entry points choose between it and the reference;
// tests, the self-test and the benchmark call it directly.
//
// What the fused LoRA linear does (x: (N, in) after flattening):
//   forward:  y  = x·Wᵀ + b            (LibTorch's addmm/mm: cuBLASLt with
//                                       the bias in the epilogue)
//             xa = xd·Aᵀ               (N, r), one cuBLAS GEMM; xd = x, or
//                                       the dropped x (a temporary) with p > 0
//             y += s·xa·Bᵀ             cublasGemmEx with beta = 1 into y: no
//                                       (N, out) adapter product is formed
//   saved:    x, xa, W, A, B (and the dropout seed); never (x·Aᵀ)·Bᵀ, never
//             the dropped x or its mask (regenerated from the seed).
//   backward: dB  = s·dyᵀ·xa           (out, r)
//             dxa = s·dy·B             (N, r)
//             dA  = dxaᵀ·xd            (r, in)   (xd regenerated with p > 0)
//             dx  = dy·W + dxa·A       second GEMM accumulated (beta = 1);
//                                      with p > 0 the second term is masked
//                                      and added by a small kernel
//             dW  = dyᵀ·x, db = Σ dy   only when weight/bias require grad.
//   dA and dB are computed in fp32 (cuBLAS fp32 output) and cast to A's and
//   B's dtypes, so fp32 adapters on a bf16 model get fp32-accurate grads.
//
// XSupported() is false in a build without CUDA; the fused functions then
// throw c10::Error, as they do on unsupported arguments.
//
// Shape legend: N tokens, in, out features, r rank.
#ifndef FJORD_LORA_KERNELS_LORA_FUSED_H_
#define FJORD_LORA_KERNELS_LORA_FUSED_H_

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "lora/kernels/lora_ops.h"

namespace fjord::lora::kernels::fused {

// x: (..., in) CUDA fp32/bf16/fp16; weight (out, in) and bias (out) of x's
// dtype on x's device; a (r, in), b (out, r) fp32/bf16/fp16 with r >= 1;
// 0 <= dropout_p < 1.
bool LoraLinearSupported(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double dropout_p);

// As lora_ops.h's LoraLinear. With dropout active (training and p > 0), the
// mask comes from `seed`, or from a seed drawn from LibTorch's default CPU
// generator when none is given.
torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training,
                         std::optional<uint64_t> seed = std::nullopt);

bool LoraLinearGroupedSupported(const torch::Tensor& x,
                                const std::vector<LoraProjection>& projections, double dropout_p);

std::vector<torch::Tensor> LoraLinearGrouped(const torch::Tensor& x,
                                             const std::vector<LoraProjection>& projections,
                                             double dropout_p, bool training);

// The scaled mask the fused dropout applies to an (rows, cols) input with
// `seed`: (rows, cols) fp32 of 0 or 1/(1 − p), on `device`. For tests.
torch::Tensor DropoutMask(int64_t rows, int64_t cols, double p, uint64_t seed,
                          const torch::Device& device);

}  // namespace fjord::lora::kernels::fused

#endif  // FJORD_LORA_KERNELS_LORA_FUSED_H_
