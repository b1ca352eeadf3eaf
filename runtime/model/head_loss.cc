#include "runtime/model/head_loss.h"

#include <torch/autograd.h>

#include <algorithm>
#include <optional>

#include "runtime/kernels/ops.h"

namespace fjord::model {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kIgnore = -100;

struct Wanted {
  bool hidden = false;  // d loss / d hidden (through l's h·Wᵀ)
  bool input = false;   // d loss / d dropout(h) (through the update)
  bool ab = false;      // d loss / d A and d B
  bool any() const { return hidden || input || ab; }
};

struct Result {
  Tensor loss;     // 0-dim fp32
  Tensor dhidden;  // (N, C) in hidden's dtype, or undefined
  Tensor dinput;   // (N, C) in hidden's dtype, or undefined
  Tensor da;       // (r, C) fp32, or undefined
  Tensor db;       // (V, r) fp32, or undefined
};

// One pass over the rows, chunk by chunk: the loss and, as each chunk's
// logits are at hand, the gradients `want` asks for. Rows whose label is
// -100 add nothing to either, so only the others are computed (in chat
// data, a prompt's rows are left out).
Result Run(const Tensor& hidden, const Tensor& input, const LinearParts& p, const Tensor& labels,
           int64_t chunk, double cap, Wanted want) {
  const Tensor rows = kernels::reference::TrainedRows(labels);
  auto trained = [&](const Tensor& x) { return rows.defined() ? x.index_select(0, rows) : x; };
  const Tensor h_all = trained(hidden), in_all = trained(input), y_all = trained(labels);
  const int64_t n = h_all.size(0);
  if (chunk <= 0) chunk = std::max<int64_t>(n, 1);
  const auto dtype = hidden.scalar_type();
  const auto f32 = hidden.options().dtype(torch::kFloat32);
  const Tensor w = p.weight.to(dtype);
  const Tensor bias = p.bias.defined() ? p.bias.to(torch::kFloat32) : Tensor();
  const bool update = p.a.defined();
  Tensor a, b, u, du, db;
  if (update) {
    a = p.a.to(dtype);
    b = p.b.to(dtype);
    u = torch::matmul(in_all, a.t());  // (n, r)
    if (want.input || want.ab) du = torch::empty({n, a.size(0)}, f32);
    if (want.ab) db = torch::zeros(b.sizes(), f32);
  }
  Result r;
  Tensor total = torch::zeros({}, f32);
  Tensor dh = want.hidden ? torch::empty_like(h_all) : Tensor();
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    Tensor l = torch::matmul(h_all.narrow(0, start, len), w.t());  // (len, V)
    if (update) l.addmm_(u.narrow(0, start, len), b.t(), /*beta=*/1, /*alpha=*/p.scale);
    l = l.to(torch::kFloat32);
    if (bias.defined()) l.add_(bias);
    Tensor t;  // tanh(l / cap)
    if (cap > 0) {
      t = torch::tanh(l / cap);
      l = t * cap;
    }
    total.add_(kernels::reference::CrossEntropyInPlace(l, y_all.narrow(0, start, len).unsqueeze(1),
                                                       want.any()));
    if (!want.any()) continue;
    // l is now d loss / d l: softmax less the target's one-hot; through the
    // cap's tanh, times 1 - tanh².
    if (cap > 0) l.mul_(1 - t * t);
    const Tensor d = l.to(dtype);
    if (want.hidden) dh.narrow(0, start, len).copy_(torch::matmul(d, w));
    if (!update) continue;
    if (want.ab)
      db.add_(torch::matmul(d.t(), u.narrow(0, start, len)).to(torch::kFloat32), p.scale);
    if (du.defined()) du.narrow(0, start, len).copy_(torch::matmul(d, b).mul_(p.scale));
  }
  // Back to every row (zero for the untrained ones).
  auto all_rows = [&](const Tensor& x) {
    return rows.defined() ? torch::zeros_like(hidden).index_copy_(0, rows, x) : x;
  };
  r.loss = total;
  if (want.hidden) r.dhidden = all_rows(dh);
  if (update && want.ab) {
    r.da = torch::matmul(du.t().to(dtype), in_all).to(torch::kFloat32);  // (r, C)
    r.db = db;
  }
  if (update && want.input) r.dinput = all_rows(torch::matmul(du.to(dtype), a));
  return r;
}

struct HeadLossFn : public torch::autograd::Function<HeadLossFn> {
  // input is hidden itself when the update has no dropout (`same`): its
  // gradient is then folded into hidden's.
  static Tensor forward(AutogradContext* ctx, const Tensor& hidden, const Tensor& input,
                        const Tensor& a, const Tensor& b, const Tensor& labels, LinearParts parts,
                        int64_t chunk, double cap, bool same, bool update) {
    Wanted want;
    want.hidden = hidden.requires_grad();
    want.input = update && hidden.requires_grad();
    want.ab = update && (a.requires_grad() || b.requires_grad());
    if (update) {
      parts.a = a;
      parts.b = b;
    }
    Result r = Run(hidden, input, parts, labels, chunk, cap, want);
    if (same && r.dinput.defined()) {
      r.dhidden.add_(r.dinput);
      r.dinput = Tensor();
    }
    ctx->save_for_backward({r.dhidden, r.dinput, r.da, r.db});
    ctx->saved_data["a_dtype"] = static_cast<int64_t>(a.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
    return r.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor& g = grads[0];  // 0-dim fp32
    auto scaled = [&](const Tensor& x, std::optional<torch::ScalarType> as = std::nullopt) {
      if (!x.defined()) return Tensor();
      Tensor y = x * g.to(x.scalar_type());
      return as.has_value() ? y.to(*as) : y;
    };
    const auto a_dtype = static_cast<torch::ScalarType>(ctx->saved_data["a_dtype"].toInt());
    const auto b_dtype = static_cast<torch::ScalarType>(ctx->saved_data["b_dtype"].toInt());
    return {scaled(s[0]),
            scaled(s[1]),
            scaled(s[2], a_dtype),
            scaled(s[3], b_dtype),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor()};
  }
};

}  // namespace

Tensor HeadCrossEntropySum(const Tensor& hidden, const LinearParts& head, const Tensor& labels,
                           int64_t chunk_rows, double softcap) {
  TORCH_CHECK(hidden.dim() == 2 && labels.dim() == 1 && labels.size(0) == hidden.size(0),
              "HeadCrossEntropySum: want hidden (N, C) and labels (N); got ", hidden.sizes(),
              " and ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == torch::kInt64,
              "HeadCrossEntropySum: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(
      head.weight.defined() && head.weight.dim() == 2 && head.weight.size(1) == hidden.size(1),
      "HeadCrossEntropySum: want a weight (V, ", hidden.size(1), ")");
  const int64_t vocab = head.weight.size(0);
  TORCH_CHECK(!head.weight.requires_grad() && !(head.bias.defined() && head.bias.requires_grad()),
              "HeadCrossEntropySum: the weight and bias must be frozen");
  TORCH_CHECK(!head.bias.defined() || (head.bias.dim() == 1 && head.bias.size(0) == vocab),
              "HeadCrossEntropySum: want a bias (", vocab, ")");
  const bool update = head.a.defined();
  if (update) {
    TORCH_CHECK(head.b.defined() && head.a.dim() == 2 && head.b.dim() == 2 &&
                    head.a.size(1) == hidden.size(1) && head.b.size(0) == vocab &&
                    head.b.size(1) == head.a.size(0),
                "HeadCrossEntropySum: want A (r, ", hidden.size(1), ") and B (", vocab,
                ", r); got ", head.a.sizes(), " and ", head.b.sizes());
    TORCH_CHECK(head.dropout >= 0 && head.dropout < 1,
                "HeadCrossEntropySum: dropout must be in [0, 1), got ", head.dropout);
  }
  if (labels.numel() > 0) {
    const Tensor bad = (labels != kIgnore) & ((labels < 0) | (labels >= vocab));
    TORCH_CHECK(!bad.any().item<bool>(), "HeadCrossEntropySum: every label must be -100 or in [0, ",
                vocab, ")");
  }
  const Tensor y = labels.to(hidden.device());
  // dropout(h) keeps its own autograd edge back to hidden.
  const bool same = !update || head.dropout == 0;
  const Tensor input = same ? hidden : torch::dropout(hidden, head.dropout, /*train=*/true);
  const bool grad = torch::GradMode::is_enabled();
  const bool want_ab = grad && update && (head.a.requires_grad() || head.b.requires_grad());
  if (!(grad && hidden.requires_grad()) && !want_ab) {
    torch::NoGradGuard no_grad;
    return Run(hidden, input, head, y, chunk_rows, softcap, Wanted{}).loss;
  }
  LinearParts frozen = head;  // A and B go in as inputs of their own
  frozen.a = Tensor();
  frozen.b = Tensor();
  const Tensor none = torch::zeros({0}, hidden.options());
  return HeadLossFn::apply(hidden, input, update ? head.a : none, update ? head.b : none, y, frozen,
                           chunk_rows, softcap, same, update);
}

}  // namespace fjord::model
