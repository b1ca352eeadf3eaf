// Several LoRA adapters on one frozen base, trained in one forward and one
// backward (multi-LoRA batching, as mLoRA and LoRAFusion do): the batch's
// rows are grouped by adapter, every base GEMM runs once over all of them,
// and each adapter adds its update to its own rows only. K jobs then share
// one copy of the base and fill one device together.
//
//   std::vector<lora::MultiLora::Member> members(2);
//   members[0].config.r = 8;                       // an adapter to train
//   members[1].peft_dir = "runs/b/adapter";        // one made before (peft or fjord)
//   FJORD_ASSIGN_OR_RETURN(auto multi, lora::MultiLora::Attach(*lm, members));
//   FJORD_RETURN_IF_ERROR(multi->SetRows({4, 2}));  // rows 0-3: adapter 0, rows 4-5: adapter 1
//   torch::Tensor h = lm->Hidden(ids, positions, segments);          // ids: (6, T)
//   FJORD_ASSIGN_OR_RETURN(auto sums, multi->LossSums(*lm, h, targets));
//   (sums[0] / tokens0 + sums[1] / tokens1).backward();  // each its own mean
//   ... an optimizer per adapter over multi->NamedParameters(k) ...
//   FJORD_RETURN_IF_ERROR(multi->Save(0, "runs/a/adapter"));  // a PEFT adapter
//
// Each adapter's gradients depend only on its own rows, so with dropout 0 a
// joint step gives every adapter what a step of its own would (to float
// rounding: lora/multi_lora_test.cc checks it over several optimizer steps).
// Adapters may differ in rank, alpha, targets and patterns; a layer no
// adapter targets stays as it was, and one that only some target adds
// nothing to the others' rows.
//
// Routing: SetRows gives the number of consecutive batch rows of each
// adapter (dim 0 of every adapted layer's input); Only(k) sends every row
// to adapter k (decoding, evaluation and the per-adapter loss) and
// Only(kBase) to none (the frozen base: preference tuning's reference). A
// forward with gradient checkpointing is recomputed in the backward with
// the routing of that moment: keep it unchanged between a forward and its
// backward (LossSums restores it before it returns).
//
// Not here: merging (the base is shared: export each adapter on its own
// model with lora::Export), a base sharded across ranks, and fused CUDA kernels for the routed
// update (plain LibTorch GEMMs on every device; Only(k) uses LoraLinear's own forward, fused where
// built).
//
// Thread-safety: none; use from the thread that trains the model.
#ifndef FJORD_LORA_MULTI_LORA_H_
#define FJORD_LORA_MULTI_LORA_H_

#include <torch/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lora/adapter.h"
#include "lora/lora_config.h"
#include "lora/lora_linear.h"
#include "runtime/model/linear.h"
#include "runtime/model/model.h"
#include "runtime/util/env.h"

namespace fjord::lora {

// Which adapter each row of a forward belongs to; shared by a MultiLora and
// its layers.
struct MultiLoraRouting {
  std::vector<int64_t> rows;  // per adapter: its consecutive rows, in order
  int only = -1;              // >= 0: every row to that adapter; kBase: none; -1: rows
};

// One adapted slot of the model: the frozen base once over every row, then
// each adapter's update over its own rows. Module layout: "base_layer" and
// "adapter_<k>" for each adapter that targets the slot.
class MultiLoraLinear : public fjord::LinearBase {
 public:
  // layers[k]: adapter k's LoraLinear around `base` (the same object), or
  // null where adapter k does not target this slot. Throws c10::Error for a
  // layer whose base is not `base`.
  MultiLoraLinear(std::string path, std::shared_ptr<fjord::LinearBase> base,
                  std::vector<std::shared_ptr<LoraLinear>> layers,
                  std::shared_ptr<const MultiLoraRouting> routing);

  // x: (B, ..., in) -> (B, ..., out) in x's dtype. Throws c10::Error when B
  // is not the routing's row count (naming this slot's path).
  torch::Tensor forward(const torch::Tensor& x) override;

  torch::Tensor base_weight() const override { return base_->base_weight(); }
  torch::Tensor base_bias() const override { return base_->base_bias(); }
  int64_t in_features() const override { return base_->in_features(); }
  int64_t out_features() const override { return base_->out_features(); }
  fjord::LinearBase* frozen_base() override { return base_->frozen_base(); }
  // Under Only(k): adapter k's parts (the chunked loss over an adapted
  // lm_head); under Only(kBase): the base's; with rows: none (forward).
  std::optional<fjord::LinearParts> Parts() const override;

  const std::shared_ptr<fjord::LinearBase>& base_layer() const { return base_; }

 private:
  // Under Only(k): the layer every row goes through (adapter k's, or the
  // base where k does not target this slot or is kBase); else null.
  fjord::LinearBase* OnlyLayer() const;

  std::string path_;
  std::shared_ptr<fjord::LinearBase> base_;
  std::vector<std::shared_ptr<LoraLinear>> layers_;
  std::shared_ptr<const MultiLoraRouting> routing_;
};

class MultiLora {
 public:
  static constexpr int kBase = -2;

  // One adapter: a new one from `config` and `seed` (as LoraAdapter::Inject)
  // or, with peft_dir set, the PEFT adapter there (LoraAdapter::FromPretrained;
  // config and seed unused).
  struct Member {
    LoraConfig config;
    uint64_t seed = 0;
    std::string peft_dir;
  };

  // Adapts `model` (which must hold no adapter) with every member, in
  // order; the routing starts as Only(0). Errors: InvalidArgument for no
  // member; FailedPrecondition for a model that has an adapter or whose base
  // is sharded across ranks (not supported yet); Inject's and
  // FromPretrained's, prefixed with the member's index.
  // On error the model is left unchanged.
  static absl::StatusOr<std::unique_ptr<MultiLora>> Attach(CausalLM& model,
                                                           const std::vector<Member>& members,
                                                           Env* env = nullptr);

  int size() const { return static_cast<int>(adapters_.size()); }

  // The rows of the next forwards: rows[k] consecutive batch rows for
  // adapter k (0 allowed), in adapter order. InvalidArgument for the wrong
  // count, a negative entry or no row at all; the routing is then unchanged.
  absl::Status SetRows(std::vector<int64_t> rows);
  const std::vector<int64_t>& rows() const { return routing_->rows; }

  // While alive, every row goes to adapter k (or, for kBase, to none).
  class OnlyScope {
   public:
    OnlyScope(const OnlyScope&) = delete;
    OnlyScope& operator=(const OnlyScope&) = delete;
    ~OnlyScope() { routing_->only = previous_; }

   private:
    friend class MultiLora;
    OnlyScope(MultiLoraRouting* routing, int k) : routing_(routing), previous_(routing->only) {
      routing_->only = k;
    }
    MultiLoraRouting* routing_;
    int previous_;
  };
  // Throws c10::Error for k out of range (neither kBase nor in [0, size())).
  [[nodiscard]] OnlyScope Only(int k);
  // Leaves Only for the rows of SetRows (the routing Attach does not set).
  void UseRows() { routing_->only = -1; }

  // Per adapter, the cross-entropy sum of its rows of `hidden` (B, T, C)
  // against `targets` (B, T) (CausalLM::LossSum under Only(k)); 0 for an
  // adapter without rows. InvalidArgument when B is not the row count.
  absl::StatusOr<std::vector<torch::Tensor>> LossSums(CausalLM& model, const torch::Tensor& hidden,
                                                      const torch::Tensor& targets);

  // Adapter k's parameters, PEFT files and resume (LoraAdapter's).
  std::vector<std::pair<std::string, torch::Tensor>> NamedParameters(int k) const;
  absl::Status Save(int k, const std::string& dir, Env* env = nullptr) const;
  absl::Status LoadWeights(int k, const std::string& dir, Env* env = nullptr);
  const LoraAdapter& adapter(int k) const { return *adapters_.at(static_cast<size_t>(k)); }

  // Puts the model's own layers back.
  void Detach();

 private:
  MultiLora() = default;

  std::shared_ptr<MultiLoraRouting> routing_;
  std::vector<std::unique_ptr<LoraAdapter>> adapters_;
  std::vector<std::pair<LinearSlot, std::shared_ptr<MultiLoraLinear>>> layers_;  // by slot
};

}  // namespace fjord::lora

#endif  // FJORD_LORA_MULTI_LORA_H_
