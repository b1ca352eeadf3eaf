// Reference LoRA linear and dispatch. Until a fused kernel is registered, the
// reference runs everywhere.
#include "lora/kernels/lora_ops.h"

namespace fjord::lora::kernels {

namespace reference {
torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training) {
  torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  torch::Tensor xd = x;
  if (training && dropout_p > 0.0) xd = torch::dropout(x, dropout_p, /*train=*/true);
  torch::Tensor xa = torch::matmul(xd, a.to(x.scalar_type()).t());  // (..., r)
  return y + torch::matmul(xa, b.to(x.scalar_type()).t()) * scale;
}
}  // namespace reference

torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training) {
  return reference::LoraLinear(x, weight, bias, a, b, scale, dropout_p, training);
}

}  // namespace fjord::lora::kernels
