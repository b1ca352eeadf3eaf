// Linear layers of the decoder, behind one small interface so that lora/ can
// wrap a frozen base layer without runtime/ knowing about LoRA.
//
// Shape legend: N tokens (any leading dims), in = in_features, out = out_features.
#ifndef FJORD_RUNTIME_MODEL_LINEAR_H_
#define FJORD_RUNTIME_MODEL_LINEAR_H_

#include <torch/nn/functional/linear.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fjord {

// What a linear layer computes, as parts a caller can fuse into something
// larger (the chunked loss over lm_head: runtime/model/head_loss.h):
//
//   y = x·Wᵀ (+ b) (+ scale · (dropout(x)·Aᵀ)·Bᵀ)
//
// W and b are frozen; A and B (a trainable low-rank update: lora/) are
// undefined when the layer adds none.
struct LinearParts {
  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out) or undefined
  torch::Tensor a;       // (r, in) or undefined
  torch::Tensor b;       // (out, r) or undefined
  double scale = 0;      // of the update
  double dropout = 0;    // on the update's input; 0 outside training
};

// A linear map y = x·Wᵀ (+ b). Implementations: DenseLinear (here),
// quant::Nf4Linear (a weight held in 4 bits: runtime/quant) and
// lora::LoraLinear (lora/), which holds one of the others as its frozen base.
class LinearBase : public torch::nn::Module {
 public:
  // x: (..., in) -> (..., out).
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // The base weight (out, in) and bias (out) or an undefined tensor.
  virtual torch::Tensor base_weight() const = 0;
  virtual torch::Tensor base_bias() const = 0;
  virtual int64_t in_features() const { return base_weight().size(1); }
  virtual int64_t out_features() const { return base_weight().size(0); }
  // The frozen layer underneath (an adapter's base), or this one.
  virtual LinearBase* frozen_base() { return this; }
  // forward as LinearParts, when it is exactly that; std::nullopt (the
  // default) when it is not, or the weight is not held whole (4-bit,
  // sharded): callers then run forward.
  virtual std::optional<LinearParts> Parts() const { return std::nullopt; }

  // Applies `group` (this layer first, then others reading the same x) to
  // x, sharing work where the implementation can (lora: one GEMM for every
  // adapter's x·Aᵀ on CUDA). Returns one output per layer, or an empty
  // vector when it has no shared form for this group (the default), in
  // which case callers run each layer's forward. Use ForwardShared.
  virtual std::vector<torch::Tensor> ForwardGroup(const std::vector<LinearBase*>& group,
                                                  const torch::Tensor& x) {
    (void)group;
    (void)x;
    return {};
  }
};

// y_i = layers[i]->forward(x) for each i, through LinearBase::ForwardGroup
// when the layers offer a shared form. x: (..., in) -> each (..., out_i).
inline std::vector<torch::Tensor> ForwardShared(const std::vector<LinearBase*>& layers,
                                                const torch::Tensor& x) {
  std::vector<torch::Tensor> ys = layers.front()->ForwardGroup(layers, x);
  if (ys.size() == layers.size()) return ys;
  ys.clear();
  for (LinearBase* layer : layers) ys.push_back(layer->forward(x));
  return ys;
}

// A plain linear layer. Parameters are registered as "weight" and "bias"
// (bias only if given), matching Hugging Face's nn.Linear names.
class DenseLinear : public LinearBase {
 public:
  // weight: (out, in); bias: (out) or undefined.
  DenseLinear(torch::Tensor weight, torch::Tensor bias) {
    weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
    if (bias.defined()) bias_ = register_parameter("bias", std::move(bias), false);
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return torch::nn::functional::linear(x, weight_, bias_);
  }
  torch::Tensor base_weight() const override { return weight_; }
  torch::Tensor base_bias() const override { return bias_; }
  std::optional<LinearParts> Parts() const override { return LinearParts{weight_, bias_}; }
  // Replaces the weight data in place (merge/unmerge of adapters).
  void set_weight(const torch::Tensor& w) {
    torch::NoGradGuard g;
    weight_.copy_(w);
  }

 private:
  torch::Tensor weight_;  // (out, in)
  torch::Tensor bias_;    // (out) or undefined
};

// A place in the model that holds a linear layer, so it can be swapped.
struct LinearSlot {
  std::string name;  // HF module path, e.g. "model.layers.0.self_attn.q_proj"
  int layer_index;   // decoder layer index, -1 for layers outside the stack (lm_head)
  std::string
      kind;  // leaf name: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head
  torch::nn::Module* parent;           // module that registered it
  std::shared_ptr<LinearBase>* layer;  // the member that holds it
  // Replaces the layer in both the member and the parent's registry.
  void Replace(std::shared_ptr<LinearBase> next) const {
    parent->replace_module(kind, next);
    *layer = std::move(next);
  }
};

}  // namespace fjord

#endif  // FJORD_RUNTIME_MODEL_LINEAR_H_
