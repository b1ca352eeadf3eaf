// LoraLinear: wraps a frozen DenseLinear (the forward is lora/kernels'
// LoraLinear: fused on CUDA, reference elsewhere) or another frozen linear
// layer (a 4-bit base: plain LibTorch ops).
//
// Shape legend: N tokens, in, out features, r rank.
#include "lora/lora_linear.h"

#include <cmath>

#include <torch/nn/module.h>
#include <torch/utils.h>

#include "lora/kernels/lora_ops.h"

namespace fjord::lora {

LoraLinear::LoraLinear(std::shared_ptr<fjord::LinearBase> base, const Options& options,
                       at::Generator generator, std::optional<torch::Device> device)
    : base_(std::move(base)), r_(options.r), scale_(options.scale), dropout_(options.dropout) {
  TORCH_CHECK(base_ != nullptr, "LoraLinear: no base layer");
  TORCH_CHECK(dynamic_cast<LoraLinear*>(base_.get()) == nullptr,
              "LoraLinear: the base layer is already adapted");
  dense_ = std::dynamic_pointer_cast<fjord::DenseLinear>(base_);
  TORCH_CHECK(dense_ == nullptr || dense_->base_weight().defined(), "LoraLinear: no base weight");
  TORCH_CHECK(dense_ != nullptr || device.has_value(),
              "LoraLinear: a base that is not dense needs the device given");
  TORCH_CHECK(r_ >= 1, "LoraLinear: rank must be >= 1, got ", r_);
  TORCH_CHECK(dropout_ >= 0 && dropout_ < 1, "LoraLinear: dropout must be in [0, 1), got ",
              dropout_);
  const int64_t in = base_->in_features(), out = base_->out_features();
  const torch::Device where =
      device.value_or(dense_ ? dense_->base_weight().device() : torch::Device(torch::kCPU));
  register_module("base_layer", base_);
  // PEFT: kaiming_uniform_(A, a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound
  // gain * sqrt(3 / fan_in) = 1 / sqrt(in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  TORCH_CHECK(options.dtype == torch::kFloat32 || options.dtype == torch::kFloat64,
              "LoraLinear: adapter dtype must be float32 or float64");
  torch::Tensor a = at::empty({r_, in}, torch::kFloat32);
  {
    torch::NoGradGuard no_grad;
    a.uniform_(-bound, bound, generator);
  }
  a = a.to(options.dtype);
  torch::Tensor b = torch::zeros({out, r_}, options.dtype);
  auto holder_a = std::make_shared<torch::nn::Module>("Linear");
  auto holder_b = std::make_shared<torch::nn::Module>("Linear");
  a_ = holder_a->register_parameter("weight", a.to(where), /*requires_grad=*/true);
  b_ = holder_b->register_parameter("weight", b.to(where), /*requires_grad=*/true);
  register_module("lora_A", holder_a);
  register_module("lora_B", holder_b);
}

torch::Tensor LoraLinear::forward(const torch::Tensor& x) {
  if (merged_ || !enabled_) return base_->forward(x);
  if (dense_ == nullptr) {
    // A base the fused kernels cannot take (4-bit): base(x) + s·drop(x)·Aᵀ·Bᵀ.
    return AddUpdate(base_->forward(x), x);
  }
  return kernels::LoraLinear(x, base_->base_weight(), base_->base_bias(), a_, b_, scale_, dropout_,
                             is_training());
}

std::vector<torch::Tensor> LoraLinear::ForwardGroup(const std::vector<fjord::LinearBase*>& group,
                                                    const torch::Tensor& x) {
  std::vector<kernels::LoraProjection> projections;
  projections.reserve(group.size());
  for (fjord::LinearBase* layer : group) {
    auto* lora = dynamic_cast<LoraLinear*>(layer);
    if (lora == nullptr || lora->merged_ || !lora->enabled_ || lora->dense_ == nullptr ||
        lora->dropout_ != dropout_ || lora->is_training() != is_training()) {
      return {};
    }
    projections.push_back(
        {lora->base_weight(), lora->base_bias(), lora->a_, lora->b_, lora->scale_});
  }
  return kernels::LoraLinearGrouped(x, projections, dropout_, is_training());
}

std::optional<fjord::LinearParts> LoraLinear::Parts() const {
  std::optional<fjord::LinearParts> parts = base_->Parts();
  if (!parts.has_value() || merged_ || !enabled_) return parts;
  parts->a = a_;
  parts->b = b_;
  parts->scale = scale_;
  parts->dropout = is_training() ? dropout_ : 0.0;
  return parts;
}

torch::Tensor LoraLinear::AddUpdate(const torch::Tensor& y, const torch::Tensor& x) const {
  TORCH_CHECK(!merged_,
              "LoraLinear: the update of a merged adapter is in the base (unmerge first)");
  torch::Tensor h = x.reshape({-1, x.size(-1)});  // (N, in)
  if (dropout_ > 0 && is_training()) h = torch::dropout(h, dropout_, /*train=*/true);
  const torch::Tensor xa = torch::matmul(h, a_.to(x.scalar_type()).t()) * scale_;  // (N, r)
  return torch::addmm(y.reshape({-1, y.size(-1)}), xa, b_.to(x.scalar_type()).t()).view(y.sizes());
}

torch::Tensor LoraLinear::DeltaWeight() const {
  torch::NoGradGuard no_grad;
  return torch::matmul(b_, a_) * scale_;  // (out, in) in A's dtype
}

void LoraLinear::Merge() {
  if (merged_) return;
  TORCH_CHECK(dense_ != nullptr,
              "LoraLinear: cannot merge into a 4-bit base (merge into the dequantized base "
              "instead: fjord-train export)");
  torch::NoGradGuard no_grad;
  const torch::Tensor& w = dense_->base_weight();
  const auto wide = a_.scalar_type();
  dense_->set_weight((w.to(wide) + DeltaWeight()).to(w.scalar_type()));
  merged_ = true;
}

void LoraLinear::set_enabled(bool enabled) {
  TORCH_CHECK(enabled || !merged_,
              "LoraLinear: cannot switch a merged adapter off (unmerge first)");
  enabled_ = enabled;
}

void LoraLinear::Unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor& w = dense_->base_weight();
  const auto wide = a_.scalar_type();
  dense_->set_weight((w.to(wide) - DeltaWeight()).to(w.scalar_type()));
  merged_ = false;
}

}  // namespace fjord::lora
