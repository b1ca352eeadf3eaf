// One micro-batch of preference pairs through the model: the policy's
// sequence log-probabilities (adapter on, with gradients), the reference's
// (DPO: the same base with the adapter off, under no_grad, or precomputed),
// and the per-pair loss terms (preference_loss.h). The trainer (trainer.cc)
// and the TRL parity probe (lora/cli/preference_probe.cc) both use it, so
// what the test checks is what trains.
//
// Shape legend: N pairs, B rows, T tokens per row, C hidden.
#ifndef FJORD_RUNTIME_TRAIN_PREFERENCE_STEP_H_
#define FJORD_RUNTIME_TRAIN_PREFERENCE_STEP_H_

#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "runtime/data/packing.h"
#include "runtime/data/preference.h"
#include "runtime/model/model.h"
#include "runtime/train/adapter_method.h"
#include "runtime/train/preference_loss.h"

namespace fjord::train {

// A packed batch of pairs on the device (data::SplitPairs applied).
struct PreferenceBatch {
  torch::Tensor input_ids, targets, position_ids;  // (B, T) int64 on the device
  torch::Tensor segment_ids;                       // (B, T) int64 on the host
  std::vector<data::PairSpans> spans;              // N, in placement order
  int64_t tokens = 0;                              // non-padding
  int64_t nll_tokens = 0;                          // tokens the NLL term covers
};

// Splits `packed` (from a DataLoader over data::PairAsExample examples) into
// sequences and moves it to `device`.
PreferenceBatch MakePreferenceBatch(const std::vector<data::PreferencePair>& pairs,
                                    data::PackedBatch packed, const torch::Device& device,
                                    NllTokens nll);

// Reference log-probs computed once (preference.precompute_ref), by pair index.
struct ReferenceTable {
  std::vector<float> chosen, rejected;
};

struct PreferenceForward {
  PairLogps policy, ref;
  PreferenceTerms terms;
};

// The reference log-probs of a batch: from `table` when given, else one
// forward with the adapter off under no_grad (AdapterOff).
PairLogps ReferenceLogps(CausalLM& model, AdapterMethod& adapter, const PreferenceBatch& batch,
                         const ReferenceTable* table);

// Reference (DPO only) then policy forward, and the loss terms. The policy
// part carries gradients unless called under no_grad.
PreferenceForward ForwardPreference(CausalLM& model, AdapterMethod& adapter,
                                    const PreferenceBatch& batch,
                                    const PreferenceLossOptions& options,
                                    const ReferenceTable* table);

// Sums of what a step or an evaluation reports, added over micro-batches
// (and ranks: Values / FromValues carry them through an all-reduce).
struct PreferenceMetrics {
  double pairs = 0, loss = 0, chosen_rewards = 0, rejected_rewards = 0, accuracies = 0, margins = 0,
         chosen_logps = 0, rejected_logps = 0, nll_sum = 0, nll_tokens = 0, log_odds_ratio = 0,
         log_odds_chosen = 0;

  // Adds a micro-batch's terms; `loss` is its share of the batch loss.
  void Add(const PreferenceForward& f, double loss);
  std::vector<double> Values() const;
  static PreferenceMetrics FromValues(const std::vector<double>& v);
  // TRL's names and means: rewards/chosen, rewards/rejected,
  // rewards/accuracies, rewards/margins, logps/chosen, logps/rejected, and
  // for ORPO nll_loss, log_odds_ratio, log_odds_chosen (SimPO with
  // cpo_alpha: nll_loss). `prefix` "eval_" for evaluations.
  std::vector<std::pair<std::string, double>> Named(PreferenceMethod method,
                                                    const std::string& prefix) const;
};

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_PREFERENCE_STEP_H_
