// Plain LibTorch references for runtime/kernels/ops.h: the behaviour on CPU,
// the fallback on CUDA, and the oracle the fused kernels are tested against.
//
// Shape legend: N tokens, C hidden, B batch, H heads, T tokens, D head dim,
// V vocab.
#include <algorithm>

#include <torch/autograd.h>

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

torch::Tensor GemmaRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
  // As in HF's Gemma3RMSNorm: scale by (1 + w) in fp32, then cast.
  return (xf * torch::rsqrt(var + eps) * (1.0 + weight.to(torch::kFloat32))).to(x.scalar_type());
}

torch::Tensor GeGlu(const torch::Tensor& gate, const torch::Tensor& up) {
  return torch::gelu(gate, "tanh") * up;
}

// ---- Chunked linear + cross-entropy ----
//
// Autograd over a plain chunk loop would keep every chunk's logits (and
// log-softmax) alive until the backward, i.e. all N rows. So, like the fused
// kernel, the reference computes the gradients chunk by chunk during the
// forward (softmax − onehot, then dhidden = dlogits·W and dW += dlogitsᵀ·h in
// fp32) and keeps only dhidden (N, C) and dW (V, C); the backward scales them
// by grad_output. Plain LibTorch ops throughout.
namespace {

constexpr int64_t kIgnoreIndex = -100;

struct ChunkedResult {
  torch::Tensor loss;     // 0-dim fp32
  torch::Tensor dhidden;  // (N, C) or undefined
  torch::Tensor dweight;  // (V, C) or undefined
};

void CheckLabels(const torch::Tensor& labels, int64_t vocab) {
  TORCH_CHECK(labels.scalar_type() == torch::kInt64,
              "LinearCrossEntropySum: labels must be int64, got ", labels.scalar_type());
  if (labels.numel() == 0) return;
  const bool bad =
      ((labels != kIgnoreIndex) & ((labels < 0) | (labels >= vocab))).any().item<bool>();
  TORCH_CHECK(!bad, "LinearCrossEntropySum: every label must be -100 or in [0, ", vocab, ")");
}

}  // namespace

torch::Tensor TrainedRows(const torch::Tensor& labels) {
  if (labels.numel() == 0) return torch::Tensor();
  const torch::Tensor trained = labels != kIgnoreIndex;
  if (trained.all().item<bool>()) return torch::Tensor();
  return trained.nonzero().squeeze(1);
}

torch::Tensor CrossEntropyInPlace(torch::Tensor& logits, const torch::Tensor& targets, bool grad) {
  const torch::Tensor lse = torch::logsumexp(logits, 1);  // (rows)
  torch::Tensor loss = (lse - logits.gather(1, targets).squeeze(1)).sum();
  if (grad) {
    logits.sub_(lse.unsqueeze(1)).exp_();
    logits.scatter_add_(1, targets, -torch::ones({logits.size(0), 1}, logits.options()));
  }
  return loss;
}

namespace {

ChunkedResult RunChunks(const torch::Tensor& hidden, const torch::Tensor& weight,
                        const torch::Tensor& labels, int64_t chunk_tokens, bool want_dhidden,
                        bool want_dweight) {
  // Only the trained rows (in chat data, a prompt's rows are left out).
  const torch::Tensor rows = TrainedRows(labels);
  const torch::Tensor h_all = rows.defined() ? hidden.index_select(0, rows) : hidden;
  const torch::Tensor y_all = rows.defined() ? labels.index_select(0, rows) : labels;
  const int64_t n = h_all.size(0);
  if (chunk_tokens <= 0) chunk_tokens = std::max<int64_t>(n, 1);
  ChunkedResult r;
  torch::Tensor total = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
  torch::Tensor dhidden = want_dhidden ? torch::empty_like(h_all) : torch::Tensor();
  torch::Tensor dweight32;
  if (want_dweight)
    dweight32 = torch::zeros(weight.sizes(), weight.options().dtype(torch::kFloat32));
  for (int64_t start = 0; start < n; start += chunk_tokens) {
    const int64_t len = std::min(chunk_tokens, n - start);
    torch::Tensor h = h_all.narrow(0, start, len);                            // (len, C)
    torch::Tensor logits = torch::matmul(h, weight.t()).to(torch::kFloat32);  // (len, V)
    const bool grad = want_dhidden || want_dweight;
    total.add_(CrossEntropyInPlace(logits, y_all.narrow(0, start, len).unsqueeze(1), grad));
    if (!grad) continue;
    const torch::Tensor dlogits = logits.to(hidden.scalar_type());  // softmax − onehot
    if (want_dhidden) dhidden.narrow(0, start, len).copy_(torch::matmul(dlogits, weight));
    if (want_dweight) {
      dweight32.add_(torch::matmul(dlogits.t(), h).to(torch::kFloat32));
    }
  }
  if (want_dhidden) {
    r.dhidden = rows.defined() ? torch::zeros_like(hidden).index_copy_(0, rows, dhidden) : dhidden;
  }
  if (want_dweight) r.dweight = dweight32.to(weight.scalar_type());
  r.loss = total;
  return r;
}

struct ChunkedLinearCrossEntropyFn : public torch::autograd::Function<ChunkedLinearCrossEntropyFn> {
  // hidden: (N, C); weight: (V, C); labels: (N).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& labels,
                               int64_t chunk_tokens, bool want_dhidden, bool want_dweight) {
    ChunkedResult r = RunChunks(hidden, weight, labels, chunk_tokens, want_dhidden, want_dweight);
    ctx->save_for_backward({r.dhidden, r.dweight});
    return r.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor& g = grads[0];  // 0-dim fp32
    torch::Tensor dhidden = saved[0].defined() ? saved[0] * g : torch::Tensor();
    torch::Tensor dweight = saved[1].defined() ? saved[1] * g : torch::Tensor();
    return {dhidden, dweight, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && labels.dim() == 1,
              "LinearCrossEntropySum: want hidden (N, C), weight (V, C), labels (N); got ",
              hidden.sizes(), ", ", weight.sizes(), ", ", labels.sizes());
  TORCH_CHECK(hidden.size(1) == weight.size(1) && labels.size(0) == hidden.size(0),
              "LinearCrossEntropySum: mismatched shapes hidden ", hidden.sizes(), ", weight ",
              weight.sizes(), ", labels ", labels.sizes());
  CheckLabels(labels, weight.size(0));
  const bool grad_mode = torch::GradMode::is_enabled();
  const bool want_dhidden = grad_mode && hidden.requires_grad();
  const bool want_dweight = grad_mode && weight.requires_grad();
  if (!want_dhidden && !want_dweight) {
    return RunChunks(hidden, weight, labels, chunk_tokens, false, false).loss;
  }
  return ChunkedLinearCrossEntropyFn::apply(hidden, weight, labels, chunk_tokens, want_dhidden,
                                            want_dweight);
}

torch::Tensor Nf4Dequantize(const torch::Tensor& packed, const torch::Tensor& absmax,
                            const torch::Tensor& code, int64_t numel, int64_t blocksize,
                            torch::Dtype dtype) {
  TORCH_CHECK(packed.scalar_type() == torch::kUInt8, "Nf4Dequantize: packed must be uint8");
  TORCH_CHECK(blocksize > 0 && numel >= 0, "Nf4Dequantize: bad blocksize or numel");
  TORCH_CHECK(packed.numel() == (numel + 1) / 2, "Nf4Dequantize: packed has ", packed.numel(),
              " bytes, ", numel, " elements need ", (numel + 1) / 2);
  const int64_t blocks = (numel + blocksize - 1) / blocksize;
  TORCH_CHECK(absmax.numel() == blocks, "Nf4Dequantize: absmax has ", absmax.numel(), " values, ",
              numel, " elements in blocks of ", blocksize, " need ", blocks);
  TORCH_CHECK(code.numel() == 16, "Nf4Dequantize: the code has ", code.numel(), " values, not 16");
  torch::NoGradGuard no_grad;
  // Every byte value's two code values (high nibble first): one lookup per
  // byte gives both elements.
  torch::Tensor c = code.to(torch::kFloat32).reshape({-1});
  torch::Tensor nibbles =
      torch::arange(256, torch::TensorOptions().dtype(torch::kInt32).device(c.device()));
  torch::Tensor pairs = torch::stack({c.index_select(0, nibbles.bitwise_right_shift(4)),
                                      c.index_select(0, nibbles.bitwise_and(15))},
                                     1);  // (256, 2)
  torch::Tensor values =
      pairs.index_select(0, packed.reshape({-1}).to(torch::kInt32)).reshape({-1});
  // Whole blocks (numel <= blocks·blocksize <= the values, but for an odd
  // numel's padding nibble), each scaled by its absmax.
  const int64_t padded = blocks * blocksize;
  if (values.numel() < padded)
    values = torch::constant_pad_nd(values, {0, padded - values.numel()});
  if (values.numel() > padded) values = values.narrow(0, 0, padded);
  torch::Tensor scaled =
      values.view({blocks, blocksize}) * absmax.to(torch::kFloat32).reshape({blocks, 1});
  return scaled.reshape({-1}).narrow(0, 0, numel).to(dtype);
}

}  // namespace fjord::kernels::reference
