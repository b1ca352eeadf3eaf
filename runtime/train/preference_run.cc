#include "runtime/train/preference_run.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::train::internal {

namespace {

// A loader over pairs (data::PairAsExample): rows of 2 x max_length tokens.
absl::StatusOr<std::unique_ptr<data::DataLoader>> PairLoader(
    const std::vector<data::PreferencePair>& pairs, data::LoaderOptions lo) {
  auto examples = std::make_shared<std::vector<data::Example>>();
  for (const data::PreferencePair& p : pairs) examples->push_back(data::PairAsExample(p));
  lo.seq_len *= 2;
  return data::DataLoader::Create(examples, lo);
}

}  // namespace

absl::StatusOr<PreferenceSetup> LoadPreferenceSetup(const TrainingConfig& cfg,
                                                    PreferenceMethod method,
                                                    const data::DataTokenizer& data_tokenizer,
                                                    const data::RenderOptions& render,
                                                    AdapterMethod& adapter) {
  PreferenceSetup pref;
  pref.loss.method = method;
  pref.loss.loss_type = cfg.preference.loss_type;
  pref.loss.beta = cfg.preference.beta;
  pref.loss.label_smoothing = cfg.preference.label_smoothing;
  pref.loss.simpo_gamma = cfg.preference.simpo_gamma;
  pref.loss.cpo_alpha = cfg.preference.cpo_alpha;
  data::PreferenceOptions popt;
  popt.render = render;
  popt.max_length = cfg.data.max_length;
  popt.truncate = cfg.data.truncate;
  FJORD_ASSIGN_OR_RETURN(data::PreferenceDataset train_pairs,
                         data::LoadPreferenceJsonl(cfg.data.train, data_tokenizer, popt));
  pref.train =
      std::make_shared<const std::vector<data::PreferencePair>>(std::move(train_pairs.pairs));
  if (!cfg.data.validation.empty()) {
    FJORD_ASSIGN_OR_RETURN(data::PreferenceDataset valid_pairs,
                           data::LoadPreferenceJsonl(cfg.data.validation, data_tokenizer, popt));
    pref.valid =
        std::make_shared<const std::vector<data::PreferencePair>>(std::move(valid_pairs.pairs));
  }
  if (NeedsReference(pref.loss.method)) {
    absl::Status on = adapter.SetEnabled(true);
    if (!on.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.method ", cfg.training.method,
                       " needs the adapter switched off for the reference model: ", on.message()));
    }
  }
  return pref;
}

// The reference log-probs of every pair, in order, with the adapter off.
absl::StatusOr<ReferenceTable> PrecomputeReference(CausalLM& model, AdapterMethod& adapter,
                                                   const std::vector<data::PreferencePair>& pairs,
                                                   const TrainingConfig& cfg,
                                                   const torch::Device& device) {
  data::LoaderOptions lo;
  lo.seq_len = cfg.data.max_length;
  lo.packing = cfg.data.packing;
  lo.shuffle = false;
  FJORD_ASSIGN_OR_RETURN(auto loader, PairLoader(pairs, lo));
  ReferenceTable table;
  table.chosen.assign(pairs.size(), 0.f);
  table.rejected.assign(pairs.size(), 0.f);
  while (true) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch pb, loader->NextBatch(cfg.training.micro_batch_size));
    const bool end = pb.end_of_epoch;
    const PreferenceBatch b = MakePreferenceBatch(pairs, std::move(pb), device, NllTokens::kNone);
    const PairLogps ref = ReferenceLogps(model, adapter, b, nullptr);
    const torch::Tensor chosen = ref.chosen.cpu(), rejected = ref.rejected.cpu();
    for (size_t i = 0; i < b.spans.size(); ++i) {
      table.chosen[static_cast<size_t>(b.spans[i].pair)] = chosen[i].item<float>();
      table.rejected[static_cast<size_t>(b.spans[i].pair)] = rejected[i].item<float>();
    }
    if (end) break;
  }
  return table;
}

data::LoaderOptions EvalLoaderOptions(const TrainingConfig& cfg) {
  data::LoaderOptions lo;
  lo.seq_len = cfg.data.max_length;
  lo.packing = cfg.data.packing;
  lo.shuffle = false;
  return lo;
}

// The preference loss and TRL's metrics over the validation pairs (no
// dropout, no gradients), in fixed order; shared out over the ranks as
// Evaluate does.
absl::StatusOr<PreferenceMetrics> EvaluatePreference(CausalLM& model, AdapterMethod& adapter,
                                                     const PreferenceSetup& setup,
                                                     const TrainingConfig& cfg,
                                                     const torch::Device& device,
                                                     dist::World* world) {
  const int64_t ranks = world != nullptr ? world->size() : 1;
  const int64_t rank = world != nullptr ? world->rank() : 0;
  torch::NoGradGuard no_grad;
  model.eval();
  FJORD_ASSIGN_OR_RETURN(auto loader, PairLoader(*setup.valid, EvalLoaderOptions(cfg)));
  PreferenceMetrics m;
  const double nll_weight = NllWeight(setup.loss);
  int64_t batches = 0;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch pb, loader->NextBatch(cfg.training.micro_batch_size));
    const bool end = pb.end_of_epoch;
    if (batches % ranks == rank) {
      const PreferenceBatch b =
          MakePreferenceBatch(*setup.valid, std::move(pb), device, NllTokensFor(setup.loss));
      const PreferenceForward f = ForwardPreference(model, adapter, b, setup.loss,
                                                    setup.valid_ref ? &*setup.valid_ref : nullptr);
      m.Add(f, f.terms.losses.sum().item<double>());  // sums here; normalised below
    }
    ++batches;
    if (end || (cfg.eval.max_batches > 0 && batches >= cfg.eval.max_batches)) break;
  }
  model.train();
  if (world != nullptr && world->size() > 1) {
    torch::Tensor sums = torch::tensor(m.Values(), torch::kFloat64);
    FJORD_RETURN_IF_ERROR(world->AllReduceSum(sums, "the preference evaluation's sums"));
    m = PreferenceMetrics::FromValues(
        std::vector<double>(sums.data_ptr<double>(), sums.data_ptr<double>() + sums.numel()));
  }
  // The mean pairwise term, plus the NLL term as TRL computes it over the batch.
  m.loss = m.loss / std::max(1.0, m.pairs) +
           (m.nll_tokens > 0 ? nll_weight * m.nll_sum / m.nll_tokens : 0.0);
  return m;
}

}  // namespace fjord::train::internal
