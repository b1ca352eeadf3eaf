// Reference LoRA linear (single, grouped, masked), dispatch between it and
// the fused CUDA form (lora_fused.h), and the LoRA kernels' self-tests,
// registered with runtime/kernels' registry at static initialisation.
//
// Shape legend: N tokens, in, out features, r rank.
#include "lora/kernels/lora_ops.h"

#include <string>
#include <vector>

#include <torch/nn/functional/linear.h>

#include "absl/strings/str_cat.h"
#include "lora/kernels/lora_fused.h"
#include "runtime/kernels/compare.h"
#include "runtime/kernels/fused_policy.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora::kernels {

namespace reference {

torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training) {
  // On (N, in): the adapter product is accumulated into the base output by
  // one addmm (alpha = scale), so neither an (N, out) adapter product nor a
  // scaled copy of it is formed, forward or backward.
  TORCH_CHECK(x.dim() >= 1, "LoraLinear: x must have a feature dimension");
  std::vector<int64_t> out_sizes = x.sizes().vec();
  out_sizes.back() = weight.size(0);
  const torch::Tensor x2 = x.reshape({-1, x.size(-1)});               // (N, in)
  torch::Tensor y = torch::nn::functional::linear(x2, weight, bias);  // (N, out)
  torch::Tensor xd = x2;
  if (training && dropout_p > 0.0) xd = torch::dropout(x2, dropout_p, /*train=*/true);
  torch::Tensor xa = torch::mm(xd, a.to(x.scalar_type()).t());  // (N, r)
  y = torch::addmm(y, xa, b.to(x.scalar_type()).t(), /*beta=*/1, /*alpha=*/scale);
  return y.view(out_sizes);  // (..., out)
}

std::vector<torch::Tensor> LoraLinearGrouped(const torch::Tensor& x,
                                             const std::vector<LoraProjection>& projections,
                                             double dropout_p, bool training) {
  std::vector<torch::Tensor> ys;
  ys.reserve(projections.size());
  for (const LoraProjection& p : projections) {
    ys.push_back(LoraLinear(x, p.weight, p.bias, p.a, p.b, p.scale, dropout_p, training));
  }
  return ys;
}

torch::Tensor LoraLinearMasked(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& a,
                               const torch::Tensor& b, double scale, const torch::Tensor& mask) {
  torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  // Stored in x's dtype, as the fused dropout stores the dropped x.
  torch::Tensor xd = (x * mask).to(x.scalar_type());
  torch::Tensor xa = torch::matmul(xd, a.to(x.scalar_type()).t());
  return y + torch::matmul(xa, b.to(x.scalar_type()).t()) * scale;
}

}  // namespace reference

torch::Tensor LoraLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& b,
                         double scale, double dropout_p, bool training) {
  if (x.is_cuda() && fjord::kernels::FusedAllowed(kLoraLinearKernel) &&
      fused::LoraLinearSupported(x, weight, bias, a, b, training ? dropout_p : 0.0)) {
    return fused::LoraLinear(x, weight, bias, a, b, scale, dropout_p, training);
  }
  return reference::LoraLinear(x, weight, bias, a, b, scale, dropout_p, training);
}

std::vector<torch::Tensor> LoraLinearGrouped(const torch::Tensor& x,
                                             const std::vector<LoraProjection>& projections,
                                             double dropout_p, bool training) {
  if (x.is_cuda() && fjord::kernels::FusedAllowed(kLoraLinearGroupedKernel) &&
      fused::LoraLinearGroupedSupported(x, projections, training ? dropout_p : 0.0)) {
    return fused::LoraLinearGrouped(x, projections, dropout_p, training);
  }
  return reference::LoraLinearGrouped(x, projections, dropout_p, training);
}

// ------------------------------------------------------------ Self-tests

namespace {

using fjord::kernels::CompareWithReference;
using fjord::kernels::DefaultTolerance;
using fjord::kernels::Tolerance;
using torch::Tensor;
using Tensors = std::vector<Tensor>;

Tensor Rand(std::vector<int64_t> sizes, torch::ScalarType dtype, double scale = 1.0) {
  return (torch::randn(sizes, torch::kFloat32) * scale).to(torch::kCUDA, dtype);
}

constexpr uint64_t kSelfTestDropoutSeed = 977;

Tolerance Scale(Tolerance t, double f) { return {t.atol * f, t.rtol * f}; }

const char* Name(torch::ScalarType t) { return t == torch::kFloat32 ? "fp32" : "bf16"; }

absl::Status SelfTestLoraLinear() {
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    const int64_t in = 40, out = 24, r = 4;
    Tensor x = Rand({2, 3, in}, dt).requires_grad_(true);                  // (B, T, in)
    Tensor w = Rand({out, in}, dt, 0.15);                                  // (out, in) frozen
    Tensor bias = Rand({out}, dt);                                         // (out)
    Tensor a = Rand({r, in}, torch::kFloat32, 0.15).requires_grad_(true);  // fp32 adapters
    Tensor b = Rand({out, r}, torch::kFloat32, 0.5).requires_grad_(true);
    const Tolerance tol = DefaultTolerance(dt);
    FJORD_RETURN_IF_ERROR(CompareWithReference(
        absl::StrCat("lora_linear ", Name(dt)), {x, w, bias, a, b},
        [](const Tensors& in) {
          return Tensors{fused::LoraLinear(in[0], in[1], in[2], in[3], in[4], 2.0, 0.1, false)};
        },
        [](const Tensors& in) {
          return Tensors{reference::LoraLinear(in[0], in[1], in[2], in[3], in[4], 2.0, 0.1, false)};
        },
        Scale(tol, 2), Scale(tol, 3)));

    // Dropout: the fused mask of a known seed, regenerated in the backward.
    Tensor mask =
        fused::DropoutMask(6, in, 0.25, kSelfTestDropoutSeed, x.device()).view({2, 3, in});
    FJORD_RETURN_IF_ERROR(CompareWithReference(
        absl::StrCat("lora_linear dropout ", Name(dt)), {x, w, bias, a, b},
        [](const Tensors& in) {
          return Tensors{fused::LoraLinear(in[0], in[1], in[2], in[3], in[4], 2.0, 0.25, true,
                                           kSelfTestDropoutSeed)};
        },
        [mask](const Tensors& in) {
          return Tensors{reference::LoraLinearMasked(in[0], in[1], in[2], in[3], in[4], 2.0, mask)};
        },
        Scale(tol, 2), Scale(tol, 3)));
  }
  return absl::OkStatus();
}

absl::Status SelfTestLoraLinearGrouped() {
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    const int64_t in = 48;
    Tensor x = Rand({5, in}, dt).requires_grad_(true);  // (N, in)
    // q, k, v: out 32, 16, 16; ranks 4, 4, 8; a bias on k only.
    const std::vector<std::pair<int64_t, int64_t>> dims = {{32, 4}, {16, 4}, {16, 8}};
    Tensors inputs = {x};
    for (size_t i = 0; i < dims.size(); ++i) {
      inputs.push_back(Rand({dims[i].first, in}, dt, 0.15));                        // weight
      inputs.push_back(i == 1 ? Rand({dims[i].first}, dt) : Tensor());              // bias
      inputs.push_back(Rand({dims[i].second, in}, dt, 0.15).requires_grad_(true));  // a
      inputs.push_back(Rand({dims[i].first, dims[i].second}, dt, 0.5).requires_grad_(true));  // b
    }
    auto projections = [](const Tensors& in) {
      std::vector<LoraProjection> ps;
      for (size_t i = 1; i + 3 < in.size(); i += 4) {
        ps.push_back({in[i], in[i + 1], in[i + 2], in[i + 3], 1.5 + static_cast<double>(i) / 4});
      }
      return ps;
    };
    const Tolerance tol = DefaultTolerance(dt);
    FJORD_RETURN_IF_ERROR(CompareWithReference(
        absl::StrCat("lora_linear_grouped ", Name(dt)), inputs,
        [projections](const Tensors& in) {
          return fused::LoraLinearGrouped(in[0], projections(in), 0.0, true);
        },
        [projections](const Tensors& in) {
          return reference::LoraLinearGrouped(in[0], projections(in), 0.0, true);
        },
        Scale(tol, 2), Scale(tol, 3)));
  }
  return absl::OkStatus();
}

[[maybe_unused]] const bool kRegistered = [] {
  fjord::kernels::RegisterKernel(kLoraLinearKernel, &SelfTestLoraLinear);
  fjord::kernels::RegisterKernel(kLoraLinearGroupedKernel, &SelfTestLoraLinearGrouped);
  return true;
}();

}  // namespace

}  // namespace fjord::lora::kernels
