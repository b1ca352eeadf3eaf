#include "runtime/model/shard.h"

#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "runtime/kernels/ops.h"
#include "runtime/quant/nf4_linear.h"

namespace fjord::model {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Gathers pieces in an order, each piece's gather started while the one
// before is in use: at most two pieces are here at a time.
class PieceStream {
 public:
  PieceStream(ShardGroup& group, const Tensor& shard, const ShardPieces& pieces,
              std::vector<int64_t> order)
      : group_(group), shard_(shard), pieces_(pieces), order_(std::move(order)) {
    if (!order_.empty()) next_ = pieces_.StartGather(group_, shard_, order_[0]);
  }
  bool Done() const { return at_ >= order_.size(); }
  // The next piece: (k, gathered piece).
  std::pair<int64_t, Tensor> Next() {
    const int64_t k = order_[at_];
    Tensor piece = next_();
    next_ = nullptr;
    if (++at_ < order_.size()) next_ = pieces_.StartGather(group_, shard_, order_[at_]);
    return {k, piece};
  }

 private:
  ShardGroup& group_;
  const Tensor& shard_;
  const ShardPieces& pieces_;
  std::vector<int64_t> order_;
  size_t at_ = 0;
  std::function<Tensor()> next_;
};

std::vector<int64_t> Ascending(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

thread_local bool keep_gathered = false;  // KeepGatheredForBackward

struct GatherState : public torch::CustomClassHolder {
  std::shared_ptr<ShardGroup> group;
  Tensor shard;                                    // with pieces > 1 (a plain shard)
  std::function<std::function<Tensor()>()> start;  // ShardedLinear::GatherWeight, with pieces == 1
  int64_t out = 0;
  int64_t pieces = 1;
  std::function<Tensor()> prefetched;  // forward's weight, when prefetched
  std::shared_ptr<std::function<Tensor()>> backward_prefetched;  // the layer's, for backward
  bool keep = false;  // keep forward's weight for backward (KeepGatheredForBackward)
  Tensor kept;        // (out, in): forward's weight, kept
  Tensor Weight(torch::Dtype dtype) const {
    return start()().narrow(0, 0, out).to(dtype);  // (out, in)
  }
};

// y = x·Wᵀ, W gathered piece by piece: y's columns of each piece.
Tensor PiecewiseMatmul(const Tensor& x, const GatherState& s, torch::Dtype dtype) {
  const ShardPieces p = ShardPieces::Make(s.out, s.group->size(), s.pieces);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = p.rp * p.ranks;
  Tensor y = torch::zeros(shape, x.options().dtype(dtype));  // (..., ranks·rp)
  PieceStream stream(*s.group, s.shard, p, Ascending(p.count));
  while (!stream.Done()) {
    auto [k, w] = stream.Next();  // (ranks·take, in)
    y.index_copy_(-1, p.RowsOf(k, x.device()), torch::matmul(x.to(dtype), w.to(dtype).t()));
  }
  return y.narrow(-1, 0, s.out);
}

// dx = dy·W, W gathered piece by piece.
Tensor PiecewiseMatmulBackward(const Tensor& dy, const GatherState& s, torch::Dtype dtype) {
  const ShardPieces p = ShardPieces::Make(s.out, s.group->size(), s.pieces);
  std::vector<int64_t> pad = dy.sizes().vec();
  pad.back() = p.rp * p.ranks - s.out;
  const Tensor padded = torch::cat({dy.to(dtype), torch::zeros(pad, dy.options().dtype(dtype))},
                                   -1);  // (..., ranks·rp)
  std::vector<int64_t> shape = dy.sizes().vec();
  shape.back() = s.shard.size(1);
  Tensor dx = torch::zeros(shape, dy.options().dtype(torch::kFloat32));  // (..., in)
  PieceStream stream(*s.group, s.shard, p, Ascending(p.count));
  while (!stream.Done()) {
    auto [k, w] = stream.Next();
    dx.add_(torch::matmul(padded.index_select(-1, p.RowsOf(k, dy.device())), w.to(dtype)));
  }
  return dx.to(dtype);
}

// Starts gathering every rank's NF4 rows q (rp, in) as one byte buffer
// each: the packed indices, then each block's absmax in fp32 (double
// quantization undone here: each rank's second-level scales and offset are
// its own). The returned function waits and dequantizes: (ranks·rp, in) in
// `dtype`.
std::function<Tensor()> StartGatherNf4(ShardGroup& group, const quant::Nf4Tensor& q,
                                       torch::Dtype dtype) {
  const int64_t packed = q.packed.numel();
  const int64_t blocks = q.blocks();
  const Tensor absmax = quant::BlockAbsmax(q).contiguous();  // (blocks) fp32
  std::function<Tensor()> wait =
      group.StartAllGather(torch::cat({q.packed.reshape({-1}), absmax.view(torch::kUInt8)}));
  const int ranks = group.size();
  const int64_t rp = q.shape[0], in = q.shape[1], numel = q.numel(), blocksize = q.blocksize;
  const Tensor code = q.code.to(torch::kFloat32).contiguous();
  return [=]() {
    const Tensor all = wait().view({ranks, packed + 4 * blocks});
    const Tensor indices = all.narrow(1, 0, packed).contiguous().reshape({-1});  // (ranks·packed)
    const Tensor scales = all.narrow(1, packed, 4 * blocks)
                              .contiguous()
                              .view(torch::kFloat32)
                              .reshape({-1});  // (ranks·blocks)
    if (numel % blocksize == 0 && numel % 2 == 0) {
      // Every rank's rows end on a block and a byte: the buffers join into
      // one NF4 tensor of the whole (padded) weight.
      return kernels::Nf4Dequantize(indices, scales, code, ranks * numel, blocksize, dtype)
          .view({ranks * rp, in});
    }
    std::vector<Tensor> parts;
    for (int r = 0; r < ranks; ++r) {
      parts.push_back(kernels::Nf4Dequantize(indices.narrow(0, r * packed, packed),
                                             scales.narrow(0, r * blocks, blocks), code, numel,
                                             blocksize, dtype));
    }
    return torch::cat(parts).view({ranks * rp, in});
  };
}

// y = x·Wᵀ with W gathered in forward and again in backward; only this
// rank's shard is kept in between. Gradient for x only (the base is frozen).
struct ShardedLinearFn : public torch::autograd::Function<ShardedLinearFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x,
                        c10::intrusive_ptr<GatherState> state) {
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    if (state->pieces > 1) return PiecewiseMatmul(x, *state, x.scalar_type());
    Tensor w;
    if (state->prefetched) {
      w = state->prefetched().narrow(0, 0, state->out).to(x.scalar_type());
      state->prefetched = nullptr;  // backward gathers anew
    } else {
      w = state->Weight(x.scalar_type());
    }
    if (state->keep) state->kept = w;
    return torch::matmul(x, w.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto state =
        c10::static_intrusive_pointer_cast<GatherState>(ctx->saved_data["state"].toCapsule());
    const auto dtype = static_cast<torch::Dtype>(ctx->saved_data["dtype"].toInt());
    if (state->pieces > 1) return {PiecewiseMatmulBackward(grads[0], *state, dtype), Tensor()};
    Tensor w;
    if (state->kept.defined()) {
      w = std::move(state->kept);
      state->kept = Tensor();
    } else if (state->backward_prefetched && *state->backward_prefetched) {
      w = (*state->backward_prefetched)().narrow(0, 0, state->out).to(dtype);
      *state->backward_prefetched = nullptr;
    } else {
      w = state->Weight(dtype);
    }
    return {torch::matmul(grads[0].to(dtype), w), Tensor()};
  }
};

// Where each label is: its piece and its column in that piece.
struct LabelPlace {
  Tensor valid;  // (N) bool: not -100
  Tensor owner;  // (N) the rank whose shard holds the row
  Tensor piece;  // (N)
  Tensor off;    // (N) its row within the piece's rows of its owner
  LabelPlace(const Tensor& labels, const ShardPieces& p) {
    valid = labels != -100;
    const Tensor safe = torch::where(valid, labels, torch::zeros_like(labels));
    owner = torch::div(safe, p.rp, "floor");
    const Tensor local = safe - owner * p.rp;
    piece = torch::div(local, p.pr, "floor");
    off = local - piece * p.pr;
  }
  // The column in piece k of each label (clamped for those not in it).
  Tensor Column(const ShardPieces& p, int64_t k) const {
    return (owner * p.Take(k) + off).clamp(0, p.ranks * p.Take(k) - 1);
  }
};

// The logits of rows [a, a+len) of hidden against piece k (len, R) in fp32,
// soft-capped when cap > 0 (then `tanh` is set to tanh(l/cap)), padding
// columns -inf.
Tensor PieceLogits(const Tensor& h, const Tensor& w, const Tensor& padding, double cap,
                   Tensor* tanh) {
  Tensor l = torch::matmul(h, w.t()).to(torch::kFloat32);
  if (cap > 0) {
    Tensor t = torch::tanh(l / cap);
    l = t * cap;
    if (tanh != nullptr) *tanh = t;
  }
  return l.masked_fill(padding, -std::numeric_limits<float>::infinity());
}

struct LossResult {
  Tensor loss;     // (N) fp32: each row's loss, 0 where its label is ignored
  Tensor dhidden;  // (N, C): each row's loss's gradient for its own row, or undefined
};

LossResult ShardedLoss(const Tensor& hidden, const ShardedLinear& head, const Tensor& labels,
                       int64_t chunk, double cap, bool want_dhidden) {
  ShardGroup& group = *head.group();
  const ShardPieces p = head.pieces();
  const torch::Device device = hidden.device();
  const int64_t n = hidden.size(0);
  if (chunk <= 0) chunk = std::max<int64_t>(n, 1);
  const LabelPlace place(labels, p);
  const auto kInf = std::numeric_limits<float>::infinity();
  Tensor lse = torch::full({n}, -kInf, hidden.options().dtype(torch::kFloat32));
  Tensor target = torch::zeros({n}, hidden.options().dtype(torch::kFloat32));
  Tensor last;  // the last piece of the first pass, used first by the second
  {
    PieceStream stream(group, head.shard(), p, Ascending(p.count));
    while (!stream.Done()) {
      auto [k, w] = stream.Next();
      w = w.to(hidden.scalar_type());
      const Tensor padding = (p.RowsOf(k, device) >= p.rows).unsqueeze(0);  // (1, R)
      const Tensor col = place.Column(p, k).unsqueeze(1);                   // (N, 1)
      const Tensor here = place.valid & (place.piece == k);                 // (N)
      for (int64_t a = 0; a < n; a += chunk) {
        const int64_t len = std::min(chunk, n - a);
        const Tensor l = PieceLogits(hidden.narrow(0, a, len), w, padding, cap, nullptr);
        lse.narrow(0, a, len).copy_(torch::logaddexp(lse.narrow(0, a, len), l.logsumexp(1)));
        const Tensor t = l.gather(1, col.narrow(0, a, len)).squeeze(1);
        target.narrow(0, a, len).add_(torch::where(here.narrow(0, a, len), t, 0.0));
      }
      if (stream.Done()) last = w;
    }
  }
  LossResult r;
  r.loss = torch::where(place.valid, lse - target, 0.0);
  if (!want_dhidden) return r;
  Tensor dh = torch::zeros(hidden.sizes(), hidden.options().dtype(torch::kFloat32));  // (N, C)
  std::vector<int64_t> rest = Ascending(p.count - 1);
  std::reverse(rest.begin(), rest.end());
  PieceStream stream(group, head.shard(), p, rest);
  for (int64_t k = p.count - 1; k >= 0; --k) {
    Tensor w = k == p.count - 1 ? last : stream.Next().second.to(hidden.scalar_type());
    const Tensor padding = (p.RowsOf(k, device) >= p.rows).unsqueeze(0);
    const Tensor col = place.Column(p, k).unsqueeze(1);
    const Tensor here = (place.valid & (place.piece == k)).to(torch::kFloat32).unsqueeze(1);
    const Tensor valid = place.valid.to(torch::kFloat32).unsqueeze(1);
    for (int64_t a = 0; a < n; a += chunk) {
      const int64_t len = std::min(chunk, n - a);
      Tensor t;
      Tensor l = PieceLogits(hidden.narrow(0, a, len), w, padding, cap, &t);
      // d loss / d l = softmax - one-hot of the target; through the cap's
      // tanh: times 1 - tanh².
      Tensor d = l.sub_(lse.narrow(0, a, len).unsqueeze(1)).exp_();  // (len, R), in place
      d.scatter_add_(1, col.narrow(0, a, len), -here.narrow(0, a, len));
      if (cap > 0) d.mul_(1 - t * t);
      d.mul_(valid.narrow(0, a, len));
      dh.narrow(0, a, len).add_(torch::matmul(d.to(hidden.scalar_type()), w));
    }
    w = Tensor();
    last = Tensor();
  }
  r.dhidden = dh.to(hidden.scalar_type());
  return r;
}

// Row i's loss depends on hidden row i alone: its gradient is dhidden's
// row i times the loss's incoming gradient for row i.
struct ShardedLossFn : public torch::autograd::Function<ShardedLossFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& /*hidden*/, const Tensor& dhidden,
                        const Tensor& loss) {
    ctx->save_for_backward({dhidden});
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor dh = ctx->get_saved_variables()[0];
    return {dh * grads[0].to(dh.scalar_type()).unsqueeze(1), Tensor(), Tensor()};
  }
};

}  // namespace

ShardPieces ShardPieces::Make(int64_t rows, int ranks, int64_t pieces) {
  ShardPieces p;
  p.rows = rows;
  p.ranks = ranks;
  p.rp = RowsPerRank(rows, ranks);
  p.pr = std::max<int64_t>(
      1, (p.rp + std::max<int64_t>(pieces, 1) - 1) / std::max<int64_t>(pieces, 1));
  p.count = std::max<int64_t>(1, (p.rp + p.pr - 1) / p.pr);
  return p;
}

Tensor ShardPieces::RowsOf(int64_t k, torch::Device device) const {
  const int64_t take = Take(k);
  Tensor base = torch::arange(ranks, torch::kInt64) * rp + k * pr;  // (ranks)
  Tensor rows_of =
      (base.unsqueeze(1) + torch::arange(take, torch::kInt64).unsqueeze(0)).reshape(-1);
  return rows_of.to(device);
}

std::function<Tensor()> ShardPieces::StartGather(ShardGroup& group, const Tensor& shard,
                                                 int64_t k) const {
  return group.StartAllGather(shard.narrow(0, k * pr, Take(k)));
}

Tensor ShardedEmbedding(const Tensor& shard, int64_t rows, const Tensor& ids, ShardGroup& group,
                        int64_t pieces) {
  torch::NoGradGuard no_grad;
  const ShardPieces p = ShardPieces::Make(rows, group.size(), pieces);
  const Tensor flat = ids.reshape({-1}).to(shard.device(), torch::kInt64);
  const Tensor owner = torch::div(flat, p.rp, "floor");
  const Tensor local = flat - owner * p.rp;
  const Tensor piece = torch::div(local, p.pr, "floor");
  const Tensor off = local - piece * p.pr;
  Tensor out = torch::zeros({flat.size(0), shard.size(1)}, shard.options());
  PieceStream stream(group, shard, p, Ascending(p.count));
  while (!stream.Done()) {
    auto [k, w] = stream.Next();  // (ranks·take, C)
    const Tensor sel = (piece == k).nonzero().reshape({-1});
    if (sel.numel() == 0) continue;
    const Tensor row = (owner * p.Take(k) + off).index_select(0, sel);
    out.index_copy_(0, sel, w.index_select(0, row));
  }
  std::vector<int64_t> shape = ids.sizes().vec();
  shape.push_back(shard.size(1));
  return out.reshape(shape);
}

Tensor ShardedLinearCrossEntropySum(const Tensor& hidden, const ShardedLinear& head,
                                    const Tensor& labels, int64_t chunk_tokens, double softcap) {
  return ShardedLinearCrossEntropy(hidden, head, labels, chunk_tokens, softcap).sum();
}

Tensor ShardedLinearCrossEntropy(const Tensor& hidden, const ShardedLinear& head,
                                 const Tensor& labels, int64_t chunk_tokens, double softcap) {
  TORCH_CHECK(hidden.dim() == 2 && labels.dim() == 1 && labels.size(0) == hidden.size(0) &&
                  hidden.size(1) == head.in_features() && labels.scalar_type() == torch::kInt64,
              "ShardedLinearCrossEntropy: want hidden (N, ", head.in_features(),
              ") and int64 labels (N); got ", hidden.sizes(), ", ", labels.sizes(), " ",
              labels.scalar_type());
  TORCH_CHECK(!head.base_bias().defined(), "ShardedLinearCrossEntropy: a head with a bias");
  const Tensor y = labels.to(hidden.device());
  if (y.numel() > 0) {
    const bool bad = ((y != -100) & ((y < 0) | (y >= head.out_features()))).any().item<bool>();
    TORCH_CHECK(!bad, "ShardedLinearCrossEntropy: every label must be -100 or in [0, ",
                head.out_features(), ")");
  }
  const bool want = torch::GradMode::is_enabled() && hidden.requires_grad();
  LossResult r;
  {
    torch::NoGradGuard no_grad;
    // Rows labelled -100 add nothing: only the others are computed (the
    // gathers are the same either way, so the ranks stay in step).
    const Tensor rows = kernels::reference::TrainedRows(y);
    const Tensor h = rows.defined() ? hidden.detach().index_select(0, rows) : hidden.detach();
    r = ShardedLoss(h.contiguous(), head, rows.defined() ? y.index_select(0, rows) : y,
                    chunk_tokens, softcap, want);
    if (rows.defined()) {
      r.loss = torch::zeros({hidden.size(0)}, r.loss.options()).index_copy_(0, rows, r.loss);
      if (want) r.dhidden = torch::zeros_like(hidden).index_copy_(0, rows, r.dhidden);
    }
  }
  if (!want) return r.loss;
  return ShardedLossFn::apply(hidden, r.dhidden, r.loss);
}

Tensor ShardRows(const Tensor& w, const ShardGroup& group) {
  const int64_t rows = w.size(0);
  const int64_t rp = RowsPerRank(rows, group.size());
  const int64_t begin = std::min<int64_t>(rows, rp * group.rank());
  const int64_t take = std::min<int64_t>(rp, rows - begin);
  Tensor part = w.narrow(0, begin, take);
  if (take == rp) return part.contiguous().clone();
  std::vector<int64_t> pad_shape = w.sizes().vec();
  pad_shape[0] = rp - take;
  return torch::cat({part, torch::zeros(pad_shape, w.options())}, 0);
}

quant::Nf4Tensor ShardNf4Rows(const quant::Nf4Tensor& q, const ShardGroup& group) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(q.shape.size() == 2 && q.blocksize % 2 == 0 && q.shape[1] % q.blocksize == 0,
              "ShardNf4Rows: rows of ", q.shape.size() == 2 ? q.shape[1] : 0,
              " weights do not end on a block of ", q.blocksize);
  // As ShardRows takes a weight's rows: the bytes of each row, and the
  // absmax of its blocks, are rows of these.
  const int64_t rows = q.shape[0], in = q.shape[1];
  quant::Nf4Tensor s;
  s.shape = {RowsPerRank(rows, group.size()), in};
  s.dtype = q.dtype;
  s.blocksize = q.blocksize;
  s.code = q.code.clone();
  s.packed = ShardRows(q.packed.reshape({rows, in / 2}), group).reshape({-1});
  s.absmax = ShardRows(quant::BlockAbsmax(q).view({rows, in / q.blocksize}), group).reshape({-1});
  return s;
}

ShardedLinear::ShardedLinear(Tensor shard, int64_t out, Tensor bias,
                             std::shared_ptr<ShardGroup> group, int64_t pieces)
    : shard_(std::move(shard)),
      dtype_(shard_.scalar_type()),
      out_(out),
      bias_(std::move(bias)),
      group_(std::move(group)),
      pieces_(std::max<int64_t>(pieces, 1)) {
  TORCH_CHECK(group_ != nullptr, "ShardedLinear: no shard group");
  TORCH_CHECK(shard_.dim() == 2 && shard_.size(0) == RowsPerRank(out_, group_->size()),
              "ShardedLinear: a shard of ", shard_.sizes(), " for ", out_, " rows over ",
              group_->size(), " ranks");
  shard_ = register_buffer("weight_shard", shard_);
  if (bias_.defined()) bias_ = register_parameter("bias", bias_, /*requires_grad=*/false);
}

ShardedLinear::ShardedLinear(quant::Nf4Tensor shard, int64_t out, Tensor bias,
                             std::shared_ptr<ShardGroup> group, torch::Dtype dtype)
    : nf4_(std::move(shard)),
      dtype_(dtype),
      out_(out),
      bias_(std::move(bias)),
      group_(std::move(group)),
      pieces_(1) {
  TORCH_CHECK(group_ != nullptr, "ShardedLinear: no shard group");
  quant::Nf4Tensor& q = *nf4_;
  TORCH_CHECK(q.shape.size() == 2 && q.shape[0] == RowsPerRank(out_, group_->size()),
              "ShardedLinear: a 4-bit shard of ", c10::IntArrayRef(q.shape), " for ", out_,
              " rows over ", group_->size(), " ranks");
  // The 4-bit parts as buffers, as Nf4Linear's (BaseBytes counts them).
  quant::RegisterNf4Buffers(*this, "weight_shard", q);
  shard_ = q.packed;
  if (bias_.defined()) bias_ = register_parameter("bias", bias_, /*requires_grad=*/false);
}

std::function<std::function<Tensor()>()> ShardedLinear::GatherWeight() const {
  // By value: the autograd graph may hold it (backward's gather).
  if (nf4_.has_value()) {
    return [group = group_, q = *nf4_, dtype = dtype_] { return StartGatherNf4(*group, q, dtype); };
  }
  return [group = group_, shard = shard_] { return group->StartAllGather(shard); };
}

Tensor ShardedLinear::forward(const Tensor& x) {
  auto state = c10::make_intrusive<GatherState>();
  state->group = group_;
  state->shard = shard_;
  state->start = GatherWeight();
  state->out = out_;
  state->pieces = pieces_;
  state->prefetched = std::move(prefetched_);
  prefetched_ = nullptr;
  state->backward_prefetched = backward_prefetched_;
  state->keep = keep_gathered && pieces_ == 1 && torch::GradMode::is_enabled() && x.requires_grad();
  Tensor y = ShardedLinearFn::apply(x, state);
  return bias_.defined() ? y + bias_.to(y.scalar_type()) : y;
}

void ShardedLinear::PrefetchForBackward() {
  if (!*backward_prefetched_ && pieces_ == 1) *backward_prefetched_ = GatherWeight()();
}

KeepGatheredForBackward::KeepGatheredForBackward() : was_(keep_gathered) { keep_gathered = true; }
KeepGatheredForBackward::~KeepGatheredForBackward() { keep_gathered = was_; }

void ShardedLinear::Prefetch() {
  if (!prefetched_ && pieces_ == 1) prefetched_ = GatherWeight()();
}

Tensor ShardedLinear::base_weight() const {
  torch::NoGradGuard no_grad;
  return GatherWeight()()().narrow(0, 0, out_);
}

}  // namespace fjord::model
