// The LoRA linear layer: a frozen base linear layer plus a trainable
// low-rank update, as PEFT's lora.Linear:
//
//   y = base(x) + scale · B·A·dropout(x)      A: (r, in), B: (out, r)
//
// A starts as PEFT's kaiming_uniform_(a = √5), i.e. U(−1/√in, 1/√in), B as
// zeros, so a fresh adapter leaves the model unchanged. A and B are always
// fp32 (whatever the base's dtype: bf16 on GPU); the forward goes through
// lora/kernels (LoraLinear: the fused CUDA kernel or the LibTorch reference),
// which casts them to x's dtype on the way in and gives fp32 gradients.
//
// Module layout, matching PEFT's state-dict names: "base_layer" (the frozen
// DenseLinear: base_layer.weight, base_layer.bias), "lora_A" (lora_A.weight)
// and "lora_B" (lora_B.weight).
//
// The base may also be another frozen LinearBase (quant::Nf4Linear: QLoRA).
// Then forward is base(x) + scale · dropout(x)·Aᵀ·Bᵀ in plain LibTorch ops
// (the fused kernels take a dense weight), and Merge is refused: a 4-bit
// weight cannot take the update without a second rounding (export merges
// into the dequantized base instead).
//
// Thread-safety: a torch::nn::Module; not safe to mutate (Merge, train/eval)
// while another thread runs forward.
//
// Shape legend: N tokens (any leading dims), in, out features, r rank.
#ifndef FJORD_LORA_LORA_LINEAR_H_
#define FJORD_LORA_LORA_LINEAR_H_

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <memory>
#include <optional>
#include <vector>

#include "runtime/model/linear.h"

namespace fjord::lora {

class LoraLinear : public fjord::LinearBase {
 public:
  struct Options {
    int64_t r = 8;         // rank, >= 1
    double scale = 1.0;    // alpha / r (or alpha / sqrt(r) with rsLoRA)
    double dropout = 0.0;  // on the adapter input, in training mode only; [0, 1)
    // Dtype of A and B (default fp32; float64 for gradient checks).
    torch::Dtype dtype = torch::kFloat32;
  };

  // Wraps `base` (frozen; its weight (out, in) and bias (out) are used as
  // they are). A is drawn from `generator` (a CPU generator, so the same seed
  // gives the same A on every device) and both A and B are placed, in
  // options.dtype, on `device` (default: the dense base weight's). Throws
  // c10::Error for r < 1, a base with no weight, or a base already adapted.
  LoraLinear(std::shared_ptr<fjord::LinearBase> base, const Options& options,
             at::Generator generator, std::optional<torch::Device> device = std::nullopt);

  // x: (..., in) -> (..., out) in x's dtype. When merged, just the base.
  torch::Tensor forward(const torch::Tensor& x) override;

  // When every layer of `group` (this one first) is an unmerged LoraLinear
  // with the same dropout, one grouped LoRA call (lora_kernels'
  // LoraLinearGrouped: on CUDA a single x·[A₀; A₁; ...]ᵀ GEMM); else empty.
  std::vector<torch::Tensor> ForwardGroup(const std::vector<fjord::LinearBase*>& group,
                                          const torch::Tensor& x) override;

  torch::Tensor base_weight() const override { return base_->base_weight(); }
  torch::Tensor base_bias() const override { return base_->base_bias(); }

  const std::shared_ptr<fjord::LinearBase>& base_layer() const { return base_; }
  fjord::LinearBase* frozen_base() override { return base_->frozen_base(); }
  // The base's parts plus this update (A, B, scale, and the dropout when
  // training); the base's alone when merged or switched off; std::nullopt
  // when the base has none (4-bit).
  std::optional<fjord::LinearParts> Parts() const override;
  const torch::Tensor& lora_A() const { return a_; }  // (r, in), requires grad
  const torch::Tensor& lora_B() const { return b_; }  // (out, r), requires grad
  int64_t r() const { return r_; }
  double scale() const { return scale_; }
  double dropout() const { return dropout_; }

  // y + scale · (dropout(x)·Aᵀ)·Bᵀ, with y the base's output for x: x
  // (..., in), y (..., out) -> (..., out) in x's dtype (A and B cast to it;
  // their gradients arrive in their own dtype). Plain LibTorch ops: the
  // scale goes on the (N, r) product and the last GEMM adds into y; dropout
  // in training mode only. What forward computes, for a caller that runs the
  // base itself (lora::MultiLoraLinear, a 4-bit base). Throws c10::Error
  // when merged.
  torch::Tensor AddUpdate(const torch::Tensor& y, const torch::Tensor& x) const;

  // scale · B·A as (out, in) in fp32 (or A's dtype if wider), on the weights' device.
  torch::Tensor DeltaWeight() const;

  // Adds DeltaWeight() to the base weight (in fp32, rounded to the weight's
  // dtype), after which forward is the base alone; Unmerge subtracts it again
  // (exact to fp32 rounding for an fp32 base; a bf16 base loses the bits
  // rounding cost). Both are no-ops when already in that state. Do not train
  // while merged: the adapter's gradients would not flow. Throws c10::Error
  // for a base that is not a DenseLinear (a 4-bit base).
  void Merge();
  void Unmerge();
  bool merged() const { return merged_; }

  // Off: forward is the base alone (the update and its dropout skipped), as
  // PEFT's disable_adapter(); the reference model of preference tuning. On
  // by default. Throws c10::Error when switched off while merged.
  void set_enabled(bool enabled);
  bool enabled() const { return enabled_; }

 private:
  std::shared_ptr<fjord::LinearBase> base_;
  std::shared_ptr<fjord::DenseLinear> dense_;  // base_ when it is dense, else null
  torch::Tensor a_;                            // (r, in) fp32
  torch::Tensor b_;                            // (out, r) fp32
  int64_t r_;
  double scale_;
  double dropout_;
  bool merged_ = false;
  bool enabled_ = true;
};

}  // namespace fjord::lora

#endif  // FJORD_LORA_LORA_LINEAR_H_
