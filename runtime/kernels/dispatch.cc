// Backend policy and dispatch for runtime/kernels/ops.h. Until fused kernels
// are registered, every op runs its reference.
#include <atomic>

#include "runtime/kernels/ops.h"

namespace fjord::kernels {
namespace {
std::atomic<Backend> g_backend{Backend::kAuto};
}  // namespace

void SetBackend(Backend backend) { g_backend.store(backend); }
Backend GetBackend() { return g_backend.load(); }

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return reference::RmsNorm(x, weight, eps);
}

std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin) {
  return reference::ApplyRope(q, k, cos, sin);
}

torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up) {
  return reference::SwiGlu(gate, up);
}

torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens) {
  return reference::LinearCrossEntropySum(hidden, weight, labels, chunk_tokens);
}

}  // namespace fjord::kernels
