// Backend policy and dispatch for runtime/kernels/ops.h: each entry point runs
// the fused CUDA kernel when the policy allows it (fused_policy.h) and the
// arguments are ones it supports (fused.h), else the reference.
#include <atomic>

#include "runtime/kernels/fused.h"
#include "runtime/kernels/fused_policy.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/ops.h"

namespace fjord::kernels {
namespace {
std::atomic<Backend> g_backend{Backend::kAuto};
}  // namespace

void SetBackend(Backend backend) { g_backend.store(backend); }
Backend GetBackend() { return g_backend.load(); }

bool FusedAllowed(std::string_view kernel) {
  if (!fused::kBuilt) return false;
  switch (GetBackend()) {
    case Backend::kReference:
      return false;
    case Backend::kAuto:
      return GetKernelHealth(kernel) == KernelHealth::kPassed;
    case Backend::kFused:
      return GetKernelHealth(kernel) != KernelHealth::kDisabled;
  }
  return false;
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (x.is_cuda() && FusedAllowed(kRmsNormKernel) && fused::RmsNormSupported(x, weight)) {
    return fused::RmsNorm(x, weight, eps);
  }
  return reference::RmsNorm(x, weight, eps);
}

std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin) {
  if (q.is_cuda() && FusedAllowed(kRopeKernel) && fused::RopeSupported(q, k, cos, sin)) {
    return fused::ApplyRope(q, k, cos, sin);
  }
  return reference::ApplyRope(q, k, cos, sin);
}

torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (gate.is_cuda() && FusedAllowed(kSwiGluKernel) && fused::SwiGluSupported(gate, up)) {
    return fused::SwiGlu(gate, up);
  }
  return reference::SwiGlu(gate, up);
}

torch::Tensor GemmaRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (x.is_cuda() && FusedAllowed(kGemmaRmsNormKernel) && fused::RmsNormSupported(x, weight)) {
    return fused::GemmaRmsNorm(x, weight, eps);
  }
  return reference::GemmaRmsNorm(x, weight, eps);
}

torch::Tensor GeGlu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (gate.is_cuda() && FusedAllowed(kGeGluKernel) && fused::GeGluSupported(gate, up)) {
    return fused::GeGlu(gate, up);
  }
  return reference::GeGlu(gate, up);
}

torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens) {
  if (hidden.is_cuda() && FusedAllowed(kLinearCrossEntropyKernel) &&
      fused::LinearCrossEntropySupported(hidden, weight, labels)) {
    return fused::LinearCrossEntropySum(hidden, weight, labels, chunk_tokens);
  }
  return reference::LinearCrossEntropySum(hidden, weight, labels, chunk_tokens);
}

torch::Tensor Nf4Dequantize(const torch::Tensor& packed, const torch::Tensor& absmax,
                            const torch::Tensor& code, int64_t numel, int64_t blocksize,
                            torch::Dtype dtype) {
  if (packed.is_cuda() && FusedAllowed(kNf4DequantizeKernel) &&
      fused::Nf4DequantizeSupported(packed, absmax, code, numel, blocksize, dtype)) {
    return fused::Nf4Dequantize(packed, absmax, code, numel, blocksize, dtype);
  }
  return reference::Nf4Dequantize(packed, absmax, code, numel, blocksize, dtype);
}

}  // namespace fjord::kernels
