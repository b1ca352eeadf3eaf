// A frozen linear layer whose weight is held in NF4 (runtime/quant/nf4.h):
// the QLoRA base layer. Each forward dequantizes the weight to x's dtype
// (a fused kernel on CUDA), multiplies, and lets the dequantized copy go;
// backward dequantizes it again for the input gradient (the weight gets
// none), so no full-precision copy of the weight outlives a call.
//
// Shape legend: N tokens (any leading dims), in = in_features, out = out_features.
#ifndef FJORD_RUNTIME_QUANT_NF4_LINEAR_H_
#define FJORD_RUNTIME_QUANT_NF4_LINEAR_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <string>

#include "runtime/model/linear.h"
#include "runtime/quant/nf4.h"

namespace fjord::quant {

// Registers q's parts with `module` as buffers named prefix,
// prefix_quant_map, prefix_absmax (and prefix_nested_absmax,
// prefix_nested_quant_map with double quantization), so that the module's
// buffers hold the weight (its memory is then what named_buffers() lists),
// and points q's tensors at them.
void RegisterNf4Buffers(torch::nn::Module& module, const std::string& prefix, Nf4Tensor& q);

class Nf4Linear : public LinearBase {
 public:
  // weight: the quantized (out, in) weight; bias: (out) or undefined; both
  // on the device the layer computes on. dtype: the model's (what
  // base_weight() returns; forward computes in x's dtype).
  Nf4Linear(Nf4Tensor weight, torch::Tensor bias, torch::Dtype dtype);

  // x: (..., in) -> (..., out) in x's dtype.
  torch::Tensor forward(const torch::Tensor& x) override;
  // The weight dequantized to the model's dtype, made on each call: for
  // merging and export, not for the hot path.
  torch::Tensor base_weight() const override;
  torch::Tensor base_bias() const override { return bias_; }
  int64_t in_features() const override { return weight_.shape[1]; }
  int64_t out_features() const override { return weight_.shape[0]; }

  const Nf4Tensor& quantized() const { return weight_; }

 private:
  Nf4Tensor weight_;
  torch::Tensor bias_;
  torch::Dtype dtype_;
};

}  // namespace fjord::quant

#endif  // FJORD_RUNTIME_QUANT_NF4_LINEAR_H_
