#include "runtime/model/shard.h"

#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <utility>

namespace fjord::model {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GatherState : public torch::CustomClassHolder {
  std::shared_ptr<ShardGroup> group;
  Tensor shard;
  int64_t out = 0;
  std::function<Tensor()> prefetched;  // forward's weight, when prefetched
  Tensor Weight(torch::Dtype dtype) const {
    return group->AllGather(shard).narrow(0, 0, out).to(dtype);  // (out, in)
  }
};

// y = x·Wᵀ with W gathered in forward and again in backward; only this
// rank's shard is kept in between. Gradient for x only (the base is frozen).
struct ShardedLinearFn : public torch::autograd::Function<ShardedLinearFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x,
                        c10::intrusive_ptr<GatherState> state) {
    Tensor w;
    if (state->prefetched) {
      w = state->prefetched().narrow(0, 0, state->out).to(x.scalar_type());
      state->prefetched = nullptr;  // backward gathers anew
    } else {
      w = state->Weight(x.scalar_type());
    }
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return torch::matmul(x, w.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto state =
        c10::static_intrusive_pointer_cast<GatherState>(ctx->saved_data["state"].toCapsule());
    const auto dtype = static_cast<torch::Dtype>(ctx->saved_data["dtype"].toInt());
    Tensor w = state->Weight(dtype);
    return {torch::matmul(grads[0].to(dtype), w), Tensor()};
  }
};

}  // namespace

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

ShardedLinear::ShardedLinear(Tensor shard, int64_t out, Tensor bias,
                             std::shared_ptr<ShardGroup> group)
    : shard_(std::move(shard)), out_(out), bias_(std::move(bias)), group_(std::move(group)) {
  TORCH_CHECK(group_ != nullptr, "ShardedLinear: no shard group");
  TORCH_CHECK(shard_.dim() == 2 && shard_.size(0) == RowsPerRank(out_, group_->size()),
              "ShardedLinear: a shard of ", shard_.sizes(), " for ", out_, " rows over ",
              group_->size(), " ranks");
  shard_ = register_buffer("weight_shard", shard_);
  if (bias_.defined()) bias_ = register_parameter("bias", bias_, /*requires_grad=*/false);
}

Tensor ShardedLinear::forward(const Tensor& x) {
  auto state = c10::make_intrusive<GatherState>();
  state->group = group_;
  state->shard = shard_;
  state->out = out_;
  state->prefetched = std::move(prefetched_);
  prefetched_ = nullptr;
  Tensor y = ShardedLinearFn::apply(x, state);
  return bias_.defined() ? y + bias_.to(y.scalar_type()) : y;
}

void ShardedLinear::Prefetch() {
  if (!prefetched_) prefetched_ = group_->StartAllGather(shard_);
}

Tensor ShardedLinear::base_weight() const {
  torch::NoGradGuard no_grad;
  return group_->AllGather(shard_).narrow(0, 0, out_);
}

}  // namespace fjord::model
