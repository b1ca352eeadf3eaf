// Shape legend: N pairs, B rows, T tokens per row, C hidden.
#include "runtime/train/preference_step.h"

#include <torch/nn/functional/activation.h>
#include <torch/utils.h>

namespace fjord::train {

PreferenceBatch MakePreferenceBatch(const std::vector<data::PreferencePair>& pairs,
                                    data::PackedBatch packed, const torch::Device& device,
                                    NllTokens nll) {
  PreferenceBatch b;
  b.spans = data::SplitPairs(pairs, packed);
  auto make = [&](const std::vector<int32_t>& v) {
    return torch::from_blob(const_cast<int32_t*>(v.data()), {packed.batch, packed.seq_len},
                            torch::kInt32)
        .to(device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  };
  b.input_ids = make(packed.input_ids);
  b.targets = make(packed.targets);
  b.position_ids = make(packed.position_ids);
  b.segment_ids =
      torch::from_blob(packed.segment_ids.data(), {packed.batch, packed.seq_len}, torch::kInt32)
          .to(torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  for (int32_t s : packed.segment_ids) b.tokens += (s != 0);
  for (const data::PairSpans& s : b.spans) {
    if (nll == NllTokens::kChosenSequence) b.nll_tokens += s.chosen.length - 1;
    if (nll == NllTokens::kChosenResponse) b.nll_tokens += s.chosen.response_length();
  }
  return b;
}

PairLogps ReferenceLogps(CausalLM& model, AdapterMethod& adapter, const PreferenceBatch& batch,
                         const ReferenceTable* table) {
  if (table != nullptr) {
    std::vector<float> chosen, rejected;
    for (const data::PairSpans& s : batch.spans) {
      chosen.push_back(table->chosen[static_cast<size_t>(s.pair)]);
      rejected.push_back(table->rejected[static_cast<size_t>(s.pair)]);
    }
    PairLogps ref;
    ref.chosen = torch::tensor(chosen, torch::kFloat32).to(batch.input_ids.device());
    ref.rejected = torch::tensor(rejected, torch::kFloat32).to(batch.input_ids.device());
    return ref;
  }
  torch::NoGradGuard no_grad;
  AdapterOff off(adapter);
  const torch::Tensor hidden =
      model.Hidden(batch.input_ids, batch.position_ids, batch.segment_ids);  // (B, T, C)
  return SequenceLogps(model, hidden, batch.targets, batch.spans, NllTokens::kNone);
}

PreferenceForward ForwardPreference(CausalLM& model, AdapterMethod& adapter,
                                    const PreferenceBatch& batch,
                                    const PreferenceLossOptions& options,
                                    const ReferenceTable* table) {
  PreferenceForward f;
  // The reference first: its activations are gone before the policy's
  // graph is built (a lower peak than TRL's policy-then-reference order;
  // with the adapter off no dropout draws, so the order changes nothing else).
  if (NeedsReference(options.method)) f.ref = ReferenceLogps(model, adapter, batch, table);
  const torch::Tensor hidden =
      model.Hidden(batch.input_ids, batch.position_ids, batch.segment_ids);  // (B, T, C)
  f.policy = SequenceLogps(model, hidden, batch.targets, batch.spans, NllTokensFor(options));
  f.terms = PreferenceLoss(options, f.policy, f.ref);
  return f;
}

void PreferenceMetrics::Add(const PreferenceForward& f, double batch_loss) {
  const PreferenceTerms& t = f.terms;
  pairs += static_cast<double>(t.losses.size(0));
  loss += batch_loss;
  chosen_rewards += t.chosen_rewards.sum().item<double>();
  rejected_rewards += t.rejected_rewards.sum().item<double>();
  accuracies += t.chosen_rewards.gt(t.rejected_rewards).sum().item<double>();
  margins += (t.chosen_rewards - t.rejected_rewards).sum().item<double>();
  chosen_logps += t.chosen_logps.sum().item<double>();
  rejected_logps += t.rejected_logps.sum().item<double>();
  if (f.policy.nll_sum.defined()) {
    nll_sum += f.policy.nll_sum.detach().item<double>();
    nll_tokens += static_cast<double>(f.policy.nll_tokens);
  }
  if (t.log_odds.defined()) {
    log_odds_ratio += torch::nn::functional::logsigmoid(t.log_odds).sum().item<double>();
    log_odds_chosen += t.log_odds.sum().item<double>();
  }
}

std::vector<double> PreferenceMetrics::Values() const {
  return {pairs,      loss,       chosen_rewards, rejected_rewards,
          accuracies, margins,    chosen_logps,   rejected_logps,
          nll_sum,    nll_tokens, log_odds_ratio, log_odds_chosen};
}

PreferenceMetrics PreferenceMetrics::FromValues(const std::vector<double>& v) {
  PreferenceMetrics m;
  m.pairs = v[0];
  m.loss = v[1];
  m.chosen_rewards = v[2];
  m.rejected_rewards = v[3];
  m.accuracies = v[4];
  m.margins = v[5];
  m.chosen_logps = v[6];
  m.rejected_logps = v[7];
  m.nll_sum = v[8];
  m.nll_tokens = v[9];
  m.log_odds_ratio = v[10];
  m.log_odds_chosen = v[11];
  return m;
}

std::vector<std::pair<std::string, double>> PreferenceMetrics::Named(
    PreferenceMethod method, const std::string& prefix) const {
  const double n = pairs > 0 ? pairs : 1;
  std::vector<std::pair<std::string, double>> out = {
      {prefix + "rewards/chosen", chosen_rewards / n},
      {prefix + "rewards/rejected", rejected_rewards / n},
      {prefix + "rewards/accuracies", accuracies / n},
      {prefix + "rewards/margins", margins / n},
      {prefix + "logps/chosen", chosen_logps / n},
      {prefix + "logps/rejected", rejected_logps / n},
  };
  if (nll_tokens > 0) out.emplace_back(prefix + "nll_loss", nll_sum / nll_tokens);
  if (method == PreferenceMethod::kOrpo) {
    out.emplace_back(prefix + "log_odds_ratio", log_odds_ratio / n);
    out.emplace_back(prefix + "log_odds_chosen", log_odds_chosen / n);
  }
  return out;
}

}  // namespace fjord::train
