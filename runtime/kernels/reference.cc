// Plain LibTorch references for runtime/kernels/ops.h.
#include "runtime/kernels/ops.h"

namespace fjord::kernels::reference {

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
  torch::Tensor y = xf * torch::rsqrt(var + eps);
  // As in HF: normalise in fp32, cast back, then scale by the weight.
  return weight * y.to(x.scalar_type());
}

namespace {
torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor x1 = x.narrow(-1, 0, half);
  torch::Tensor x2 = x.narrow(-1, half, x.size(-1) - half);
  return torch::cat({-x2, x1}, -1);
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin) {
  torch::Tensor c = cos.unsqueeze(1).to(q.scalar_type());  // (B, 1, T, D)
  torch::Tensor s = sin.unsqueeze(1).to(q.scalar_type());
  return {q * c + RotateHalf(q) * s, k * c + RotateHalf(k) * s};
}

torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up) {
  return torch::silu(gate) * up;
}

torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens) {
  const int64_t n = hidden.size(0);
  torch::Tensor total = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
  if (chunk_tokens <= 0) chunk_tokens = n;
  for (int64_t start = 0; start < n; start += chunk_tokens) {
    const int64_t len = std::min(chunk_tokens, n - start);
    torch::Tensor logits = torch::matmul(hidden.narrow(0, start, len), weight.t()).to(torch::kFloat32);
    torch::Tensor l = labels.narrow(0, start, len);
    total = total + torch::nn::functional::cross_entropy(
                        logits, l,
                        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(
                            torch::kSum));
  }
  return total;
}

}  // namespace fjord::kernels::reference
