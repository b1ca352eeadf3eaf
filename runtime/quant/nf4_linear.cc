#include "runtime/quant/nf4_linear.h"

#include <torch/autograd.h>

#include <utility>

#include "runtime/kernels/ops.h"

namespace fjord::quant {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The weight (out, in) in `dtype` from the parts the autograd context keeps.
Tensor Dequantized(const Tensor& packed, const Tensor& absmax, const Tensor& code, int64_t out,
                   int64_t in, int64_t blocksize, torch::Dtype dtype) {
  return kernels::Nf4Dequantize(packed, absmax, code, out * in, blocksize, dtype).view({out, in});
}

// y = x·Wᵀ with W dequantized in forward and again in backward; only the
// 4-bit parts are kept in between. Gradient for x only. (The bias is added
// outside: an undefined tensor cannot be a Function's input.)
struct Nf4LinearFn : public torch::autograd::Function<Nf4LinearFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& packed,
                        const Tensor& absmax, const Tensor& code, int64_t out, int64_t in,
                        int64_t blocksize) {
    Tensor w = Dequantized(packed, absmax, code, out, in, blocksize, x.scalar_type());
    ctx->saved_data["packed"] = packed;
    ctx->saved_data["absmax"] = absmax;
    ctx->saved_data["code"] = code;
    ctx->saved_data["out"] = out;
    ctx->saved_data["in"] = in;
    ctx->saved_data["blocksize"] = blocksize;
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return torch::matmul(x, w.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto dtype = static_cast<torch::Dtype>(ctx->saved_data["dtype"].toInt());
    Tensor w =
        Dequantized(ctx->saved_data["packed"].toTensor(), ctx->saved_data["absmax"].toTensor(),
                    ctx->saved_data["code"].toTensor(), ctx->saved_data["out"].toInt(),
                    ctx->saved_data["in"].toInt(), ctx->saved_data["blocksize"].toInt(), dtype);
    Tensor gx = torch::matmul(grads[0].to(dtype), w);  // (..., out)·(out, in)
    return {gx, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

void RegisterNf4Buffers(torch::nn::Module& module, const std::string& prefix, Nf4Tensor& q) {
  q.packed = module.register_buffer(prefix, q.packed);
  q.code = module.register_buffer(prefix + "_quant_map", q.code);
  q.absmax = module.register_buffer(prefix + "_absmax", q.absmax);
  if (q.nested) {
    q.nested_absmax = module.register_buffer(prefix + "_nested_absmax", q.nested_absmax);
    q.nested_code = module.register_buffer(prefix + "_nested_quant_map", q.nested_code);
  }
}

Nf4Linear::Nf4Linear(Nf4Tensor weight, Tensor bias, torch::Dtype dtype)
    : weight_(std::move(weight)), bias_(std::move(bias)), dtype_(dtype) {
  TORCH_CHECK(weight_.shape.size() == 2, "Nf4Linear: the weight must be 2-D");
  TORCH_CHECK(!bias_.defined() || bias_.numel() == weight_.shape[0], "Nf4Linear: bias of ",
              bias_.defined() ? bias_.numel() : 0, " for ", weight_.shape[0], " outputs");
  // The 4-bit parts as buffers, the bias as a frozen parameter, as
  // DenseLinear's.
  RegisterNf4Buffers(*this, "weight", weight_);
  if (bias_.defined()) bias_ = register_parameter("bias", bias_, /*requires_grad=*/false);
}

Tensor Nf4Linear::forward(const Tensor& x) {
  // The absmax of each block in fp32 (undoing double quantization: small,
  // 1/64 of the weight's elements) is made per call, not kept.
  Tensor absmax = BlockAbsmax(weight_).contiguous();
  Tensor y = Nf4LinearFn::apply(x, weight_.packed, absmax, weight_.code, weight_.shape[0],
                                weight_.shape[1], weight_.blocksize);
  return bias_.defined() ? y + bias_.to(y.scalar_type()) : y;
}

Tensor Nf4Linear::base_weight() const { return DequantizeNf4(weight_, dtype_); }

}  // namespace fjord::quant
