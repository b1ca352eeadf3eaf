// LoRA linear: y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ, with a plain-LibTorch
// reference and (on CUDA, where built and self-tested) a fused kernel that
// reads x once and never materialises the (N, out) adapter product.
//
// Which implementation runs follows runtime/kernels' Backend policy
// (fjord::kernels::SetBackend in runtime/kernels/ops.h) and the start-up
// self-test (runtime/kernels/self_test.h), under the kernel names
// "lora_linear" and "lora_linear_grouped".
//
// Dropout: the reference uses torch::dropout; the fused path draws its own
// mask from a seed (taken from LibTorch's default CPU generator, so
// torch::manual_seed makes it reproducible) and regenerates it in the
// backward instead of saving it. Both drop each adapter-input element with
// probability p and scale the kept ones by 1/(1 − p); their masks differ.
//
// Shape legend: N tokens (any leading dims flattened), in, out features, r rank.
#ifndef FJORD_LORA_KERNELS_LORA_OPS_H_
#define FJORD_LORA_KERNELS_LORA_OPS_H_

#include <torch/types.h>

#include <vector>

namespace fjord::lora::kernels {

// Kernel names in runtime/kernels' registry (kernel_registry.h).
inline constexpr char kLoraLinearKernel[] = "lora_linear";
inline constexpr char kLoraLinearGroupedKernel[] = "lora_linear_grouped";

// x: (..., in); weight: (out, in) frozen; bias: (out) or undefined;
// a: (r, in); b: (out, r); scale = alpha/r (or alpha/sqrt(r) with rsLoRA).
// dropout_p applies to the adapter path's input only, when `training`.
// Gradients flow to x, a and b (and to weight/bias only if they require grad).
// Returns (..., out) in x's dtype. Throws c10::Error on mismatched shapes.
torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training);

// One adapted projection of a group that shares its input.
struct LoraProjection {
  torch::Tensor weight;  // (out_i, in) frozen
  torch::Tensor bias;    // (out_i) or undefined
  torch::Tensor a;       // (r_i, in)
  torch::Tensor b;       // (out_i, r_i)
  double scale = 1.0;    // alpha_i / r_i
};

// Several LoRA linears reading the same x (q/k/v, or gate/up): returns
// y_i = LoraLinear(x, projections[i]...) for each i, as (..., out_i). The
// fused form, without dropout, runs one GEMM x·[A_0; A_1; ...]ᵀ for every
// adapter's xa (one pass over x) and, in the backward, one GEMM for all dA
// and one accumulated dx. With dropout, each projection draws its own mask
// (as PEFT's separate dropout modules do), so the adapters are computed one
// by one.
std::vector<torch::Tensor> LoraLinearGrouped(const torch::Tensor& x,
                                             const std::vector<LoraProjection>& projections,
                                             double dropout_p, bool training);

namespace reference {
torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training);

std::vector<torch::Tensor> LoraLinearGrouped(const torch::Tensor& x,
                                             const std::vector<LoraProjection>& projections,
                                             double dropout_p, bool training);

// The reference with a given dropout mask instead of a random one:
// y = x·Wᵀ + b + s·((x ⊙ mask)·Aᵀ)·Bᵀ. mask: broadcastable to x, holding 0 or
// 1/(1 − p) (fp32). For checking the fused kernel's dropout.
torch::Tensor LoraLinearMasked(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& a,
                               const torch::Tensor& b, double scale, const torch::Tensor& mask);
}  // namespace reference

}  // namespace fjord::lora::kernels

#endif  // FJORD_LORA_KERNELS_LORA_OPS_H_
