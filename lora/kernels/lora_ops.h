// LoRA linear: y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ, with a plain-LibTorch
// reference and (on CUDA, where built and self-tested) a fused kernel that
// reads x once and never materialises the (N, out) adapter product.
//
// Shape legend: N tokens (any leading dims flattened), in, out features, r rank.
#ifndef FJORD_LORA_KERNELS_LORA_OPS_H_
#define FJORD_LORA_KERNELS_LORA_OPS_H_

#include <torch/torch.h>

#include <vector>

namespace fjord::lora::kernels {

// x: (..., in); weight: (out, in) frozen; bias: (out) or undefined;
// a: (r, in); b: (out, r); scale = alpha/r (or alpha/sqrt(r) with rsLoRA).
// dropout_p applies to the adapter path's input only, when `training`.
// Gradients flow to x, a and b (and to weight/bias only if they require grad).
torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training);

namespace reference {
torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training);
}  // namespace reference

}  // namespace fjord::lora::kernels

#endif  // FJORD_LORA_KERNELS_LORA_OPS_H_
