// MultiLora: K LoraAdapters made one after another (each injected, then
// taken out again), whose layers then sit side by side in one
// MultiLoraLinear per adapted slot.
//
// Shape legend: B batch rows (the sum of the routing's rows), in, out features.
#include "lora/multi_lora.h"

#include <numeric>
#include <set>

#include <torch/nn/module.h>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::lora {

MultiLoraLinear::MultiLoraLinear(std::string path, std::shared_ptr<fjord::LinearBase> base,
                                 std::vector<std::shared_ptr<LoraLinear>> layers,
                                 std::shared_ptr<const MultiLoraRouting> routing)
    : path_(std::move(path)),
      base_(std::move(base)),
      layers_(std::move(layers)),
      routing_(std::move(routing)) {
  TORCH_CHECK(base_ != nullptr && routing_ != nullptr, "MultiLoraLinear ", path_,
              ": no base or routing");
  register_module("base_layer", base_);
  for (size_t k = 0; k < layers_.size(); ++k) {
    if (layers_[k] == nullptr) continue;
    TORCH_CHECK(layers_[k]->base_layer() == base_, "MultiLoraLinear ", path_, ": adapter ", k,
                " wraps another base layer");
    register_module(absl::StrCat("adapter_", k), layers_[k]);
  }
}

torch::Tensor MultiLoraLinear::forward(const torch::Tensor& x) {
  const MultiLoraRouting& r = *routing_;
  if (fjord::LinearBase* only = OnlyLayer(); only != nullptr) return only->forward(x);
  const int64_t rows = std::accumulate(r.rows.begin(), r.rows.end(), int64_t{0});
  TORCH_CHECK(x.dim() >= 2 && x.size(0) == rows, path_, ": the input has ",
              x.dim() >= 1 ? x.size(0) : 0, " rows but the adapters' routing gives ", rows,
              " (MultiLora::SetRows)");
  torch::Tensor y = base_->forward(x);  // (B, ..., out): the base once over every row
  bool any = false;
  for (size_t k = 0; k < layers_.size(); ++k) any |= layers_[k] != nullptr && r.rows[k] > 0;
  if (!any) return y;
  // Each adapter's update over its own rows; rows of adapters that do not
  // target this slot keep the base's output. split_with_sizes, not narrow:
  // its backward joins the pieces' gradients in one cat, where each
  // narrow's would write a zero-filled gradient of the whole input.
  const std::vector<torch::Tensor> xs = x.split_with_sizes(r.rows, 0);
  const std::vector<torch::Tensor> ys = y.split_with_sizes(r.rows, 0);
  std::vector<torch::Tensor> pieces;
  for (size_t k = 0; k < layers_.size(); ++k) {
    if (r.rows[k] == 0) continue;
    pieces.push_back(layers_[k] != nullptr ? layers_[k]->AddUpdate(ys[k], xs[k]) : ys[k]);
  }
  return pieces.size() == 1 ? pieces.front() : torch::cat(pieces, 0);
}

std::optional<fjord::LinearParts> MultiLoraLinear::Parts() const {
  const fjord::LinearBase* only = OnlyLayer();
  return only != nullptr ? only->Parts() : std::nullopt;
}

fjord::LinearBase* MultiLoraLinear::OnlyLayer() const {
  const int only = routing_->only;
  if (only == MultiLora::kBase) return base_.get();
  if (only < 0) return nullptr;
  const auto& layer = layers_.at(static_cast<size_t>(only));
  return layer != nullptr ? static_cast<fjord::LinearBase*>(layer.get()) : base_.get();
}

absl::StatusOr<std::unique_ptr<MultiLora>> MultiLora::Attach(CausalLM& model,
                                                             const std::vector<Member>& members,
                                                             Env* env) {
  if (members.empty()) return absl::InvalidArgumentError("MultiLora: no adapter given");
  if (model.shard_group() != nullptr) {
    // LossSums makes one loss call per adapter with rows: on a sharded base
    // each gathers lm_head, and ranks whose batches give an adapter no row
    // would fall out of step.
    return absl::FailedPreconditionError(
        "MultiLora: a base sharded across ranks is not supported (load it whole on each rank)");
  }
  for (const LinearSlot& slot : model.LinearSlots()) {
    LinearBase* layer = slot.layer->get();
    if (layer->frozen_base() != layer) {
      return absl::FailedPreconditionError(absl::StrCat(
          "MultiLora: ", slot.name, " is adapted already; attach to a model without adapters"));
    }
  }
  std::unique_ptr<MultiLora> multi(new MultiLora());
  multi->routing_ = std::make_shared<MultiLoraRouting>();
  multi->routing_->rows.assign(members.size(), 0);
  multi->routing_->only = 0;
  // Each adapter goes in and out again, so the next one finds the plain
  // layers (a failure leaves the model as it was: every one made so far is
  // out).
  for (size_t k = 0; k < members.size(); ++k) {
    const Member& m = members[k];
    absl::StatusOr<std::unique_ptr<LoraAdapter>> a =
        m.peft_dir.empty() ? LoraAdapter::Inject(model, m.config, m.seed)
                           : LoraAdapter::FromPretrained(model, m.peft_dir, env);
    if (!a.ok()) {
      return absl::Status(a.status().code(),
                          absl::StrCat("MultiLora adapter ", k, ": ", a.status().message()));
    }
    (*a)->Detach();
    multi->adapters_.push_back(std::move(*a));
  }
  // One MultiLoraLinear per slot any adapter targets, in the model's order;
  // all built before any is swapped in, so an error leaves the model as it was.
  std::vector<std::pair<LinearSlot, std::shared_ptr<MultiLoraLinear>>> made;
  FJORD_RETURN_IF_ERROR(TorchCall("MultiLora: building the layers", [&]() {
    for (LinearSlot& slot : model.LinearSlots()) {
      std::vector<std::shared_ptr<LoraLinear>> layers(members.size());
      bool any = false;
      for (size_t k = 0; k < members.size(); ++k) {
        const LoraAdapter& a = *multi->adapters_[k];
        for (size_t i = 0; i < a.modules().size(); ++i) {
          if (a.modules()[i].path == slot.name) {
            layers[k] = a.layers()[i];
            any = true;
          }
        }
      }
      if (!any) continue;
      auto layer = std::make_shared<MultiLoraLinear>(slot.name, *slot.layer, std::move(layers),
                                                     multi->routing_);
      layer->train(model.is_training());
      made.emplace_back(slot, std::move(layer));
    }
  }));
  for (const auto& [slot, layer] : made) slot.Replace(layer);
  multi->layers_ = std::move(made);
  return multi;
}

absl::Status MultiLora::SetRows(std::vector<int64_t> rows) {
  if (rows.size() != adapters_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MultiLora::SetRows: ", rows.size(), " row counts for ", adapters_.size(), " adapters"));
  }
  int64_t total = 0;
  for (size_t k = 0; k < rows.size(); ++k) {
    if (rows[k] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("MultiLora::SetRows: adapter ", k, " has ", rows[k], " rows"));
    }
    total += rows[k];
  }
  if (total == 0) return absl::InvalidArgumentError("MultiLora::SetRows: no row at all");
  routing_->rows = std::move(rows);
  routing_->only = -1;
  return absl::OkStatus();
}

MultiLora::OnlyScope MultiLora::Only(int k) {
  TORCH_CHECK(k == kBase || (k >= 0 && k < size()), "MultiLora::Only: no adapter ", k, " (of ",
              size(), ")");
  return OnlyScope(routing_.get(), k);
}

absl::StatusOr<std::vector<torch::Tensor>> MultiLora::LossSums(CausalLM& model,
                                                               const torch::Tensor& hidden,
                                                               const torch::Tensor& targets) {
  const std::vector<int64_t> rows = routing_->rows;
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  if (!hidden.defined() || hidden.dim() != 3 || hidden.size(0) != total || !targets.defined() ||
      targets.dim() != 2 || targets.size(0) != total) {
    return absl::InvalidArgumentError(
        absl::StrCat("MultiLora::LossSums: hidden (B, T, C) and targets (B, T) must have the ",
                     total, " rows of the routing"));
  }
  // split_with_sizes: one cat joins the pieces' gradients (MultiLoraLinear::forward).
  const std::vector<torch::Tensor> hs = hidden.split_with_sizes(rows, 0);
  const std::vector<torch::Tensor> ts = targets.split_with_sizes(rows, 0);
  std::vector<torch::Tensor> sums;
  for (int k = 0; k < size(); ++k) {
    const size_t i = static_cast<size_t>(k);
    if (rows[i] == 0) {
      sums.push_back(torch::zeros({}, hidden.options().dtype(torch::kFloat32)));
      continue;
    }
    OnlyScope only = Only(k);
    sums.push_back(model.LossSum(hs[i], ts[i]));
  }
  return sums;
}

std::vector<std::pair<std::string, torch::Tensor>> MultiLora::NamedParameters(int k) const {
  return adapter(k).NamedParameters();
}

absl::Status MultiLora::Save(int k, const std::string& dir, Env* env) const {
  if (k < 0 || k >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("MultiLora::Save: no adapter ", k));
  }
  return adapter(k).Save(dir, env);
}

absl::Status MultiLora::LoadWeights(int k, const std::string& dir, Env* env) {
  if (k < 0 || k >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("MultiLora::LoadWeights: no adapter ", k));
  }
  return adapters_[static_cast<size_t>(k)]->LoadWeights(dir, env);
}

void MultiLora::Detach() {
  for (const auto& [slot, layer] : layers_) {
    if (slot.layer->get() == layer.get()) slot.Replace(layer->base_layer());
  }
}

}  // namespace fjord::lora
