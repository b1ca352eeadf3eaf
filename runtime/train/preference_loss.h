// Preference losses (DPO and its variants, ORPO, SimPO) over the sequence
// log-probabilities of chosen and rejected responses, written from TRL's
// definitions (trl 1.16: trainer/dpo_trainer.py, experimental/orpo,
// experimental/cpo) and the papers, so that fjord's values equal TRL's:
//
//   DPO   (Rafailov et al. 2023; TRL DPOTrainer). Per pair, with summed
//         response log-probs of the policy (π) and of the reference (the
//         base with the adapter off):
//           Δ = (log π(c) − log ref(c)) − (log π(r) − log ref(r))
//         loss_type sigmoid: −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)   (cDPO's label
//                  smoothing ε; TRL 1.16 ignores label_smoothing here, so
//                  ε = 0, the default, is TRL's sigmoid)
//                   robust: [−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)] / (1−2ε)
//                   hinge:  relu(1 − βΔ)
//                   ipo:    (Δc/|c| − Δr/|r| − 1/(2β))², Δc, Δr the chosen and
//                           rejected log-ratios and |c|, |r| their response
//                           token counts (TRL's length-normalised IPO)
//         rewards: β·(log π(c) − log ref(c)), β·(log π(r) − log ref(r))
//         loss = mean over pairs.
//   ORPO  (Hong et al. 2024; TRL ORPOTrainer, β = λ). With the average
//         response log-probs p̄c, p̄r (sum / tokens):
//           log_odds = (p̄c − p̄r) − (log(1 − e^p̄c) − log(1 − e^p̄r))
//           loss = NLL − β·mean(logσ(log_odds))
//         NLL: the mean cross-entropy over every token of the chosen
//         sequences, prompt included (TRL's ORPOTrainer: labels are the whole
//         chosen row). rewards β·p̄c, β·p̄r.
//   SimPO (Meng et al. 2024; TRL CPOTrainer with loss_type simpo):
//           loss = mean(−(1−ε)·logσ(β(p̄c − p̄r − γ/β)) − ε·logσ(−β(...)))
//                  + cpo_alpha · NLL(chosen responses)
//         rewards β·p̄c, β·p̄r. cpo_alpha 0 (fjord's default) is the paper's
//         SimPO; TRL's CPOConfig defaults cpo_alpha to 1.
//
// Shape legend: N pairs, B rows, T tokens per row, C hidden.
#ifndef FJORD_RUNTIME_TRAIN_PREFERENCE_LOSS_H_
#define FJORD_RUNTIME_TRAIN_PREFERENCE_LOSS_H_

#include <torch/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/preference.h"
#include "runtime/model/model.h"

namespace fjord::train {

enum class PreferenceMethod { kDpo, kOrpo, kSimpo };

struct PreferenceLossOptions {
  PreferenceMethod method = PreferenceMethod::kDpo;
  // DPO only: sigmoid (default) | robust | hinge | ipo.
  std::string loss_type = "sigmoid";
  // Default 0.1 (TRL's DPOConfig, ORPOConfig, CPOConfig). DPO: the KL
  // penalty's weight; ORPO: λ; SimPO: the reward scale.
  double beta = 0.1;
  double label_smoothing = 0.0;  // DPO sigmoid (cDPO) and robust, SimPO; [0, 0.5)
  double simpo_gamma = 0.5;      // SimPO's target reward margin γ
  double cpo_alpha = 0.0;        // SimPO: weight of the NLL on chosen responses
};

// Whether the method needs the reference model's log-probs (DPO only).
inline bool NeedsReference(PreferenceMethod method) { return method == PreferenceMethod::kDpo; }

// The log-probabilities of one batch of N pairs.
struct PairLogps {
  torch::Tensor chosen, rejected;                // (N) fp32: summed over response tokens
  torch::Tensor chosen_tokens, rejected_tokens;  // (N) fp32: response token counts
  // The NLL term's numerator: sum of −log p over the NLL tokens (ORPO: every
  // token of the chosen sequences; SimPO: the chosen responses), () fp32, and
  // how many tokens that is. Undefined / 0 when not asked for.
  torch::Tensor nll_sum;
  int64_t nll_tokens = 0;
  // With a sharded base only: 0, () fp32, tied to every token's loss of the
  // batch. Added to the step's loss it makes backward reach every layer
  // even for a batch of no pairs (a rank's filler pass), so every rank
  // makes the same gathers.
  torch::Tensor anchor;
};

// Per-pair terms. losses carries gradients; the rest are detached.
struct PreferenceTerms {
  torch::Tensor losses;  // (N) the pairwise term (ORPO: −β·logσ(log_odds))
  torch::Tensor chosen_rewards, rejected_rewards;  // (N)
  torch::Tensor chosen_logps, rejected_logps;      // (N) TRL's logps/*: DPO sums, ORPO/SimPO means
  torch::Tensor log_odds;  // (N) ORPO only (log_odds_chosen); else undefined
};

// The per-pair terms from the policy's log-probs and, for DPO, the
// reference's (`ref`; ignored otherwise). The batch loss is
// sum(losses) / pairs + NllWeight(options) · nll_sum / nll_tokens over the
// whole (accumulated) batch.
PreferenceTerms PreferenceLoss(const PreferenceLossOptions& options, const PairLogps& policy,
                               const PairLogps& ref);

// The NLL term's weight: ORPO 1, SimPO cpo_alpha, DPO 0.
double NllWeight(const PreferenceLossOptions& options);

// What the NLL term covers, for SequenceLogps.
enum class NllTokens { kNone, kChosenSequence, kChosenResponse };
NllTokens NllTokensFor(const PreferenceLossOptions& options);

// The summed log-probabilities of each pair's chosen and rejected responses
// in one packed batch (data::SplitPairs): hidden (B, T, C) from
// model.Hidden, targets (B, T) int64 on the hidden's device. Each span's
// sum goes through model.LossSum (the fused linear + cross-entropy kernel
// on CUDA, chunked on CPU), so no (tokens, V) logits are kept; differentiable
// unless called under no_grad. With a sharded base (model.shard_group())
// every token's loss comes from one model.TokenLosses call instead, and the
// spans sum their share: the same gathers on every rank whatever its pairs.
PairLogps SequenceLogps(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& targets,
                        const std::vector<data::PairSpans>& spans, NllTokens nll);

// "sft" | "dpo" | "orpo" | "simpo" -> the method (sft: nullopt).
absl::StatusOr<std::optional<PreferenceMethod>> ParseTrainingMethod(absl::string_view name);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_PREFERENCE_LOSS_H_
