// Preference tuning's part of the trainer (trainer.cc): what the preference
// methods (training.method dpo | orpo | simpo) need besides SFT's state —
// the pairs, the loss options, the precomputed reference log-probs — and
// the passes over pairs that are not a training step: the reference
// log-probs once (preference.precompute_ref) and the evaluation. Internal to
// runtime/train.
#ifndef FJORD_RUNTIME_TRAIN_PREFERENCE_RUN_H_
#define FJORD_RUNTIME_TRAIN_PREFERENCE_RUN_H_

#include <torch/types.h>

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/loader.h"
#include "runtime/data/preference.h"
#include "runtime/data/tokenizer_view.h"
#include "runtime/dist/world.h"
#include "runtime/model/model.h"
#include "runtime/train/adapter_method.h"
#include "runtime/train/preference_loss.h"
#include "runtime/train/preference_step.h"
#include "runtime/train/training_config.h"

namespace fjord::train::internal {

// What the preference methods need besides SFT's state.
struct PreferenceSetup {
  PreferenceLossOptions loss;
  std::shared_ptr<const std::vector<data::PreferencePair>> train, valid;
  std::optional<ReferenceTable> train_ref, valid_ref;  // preference.precompute_ref
};

// The pairs of data.train (and data.validation) and the loss options of
// cfg.preference for `method`; the adapter checked to switch off when the
// method needs a reference. The files' errors name line and field.
absl::StatusOr<PreferenceSetup> LoadPreferenceSetup(const TrainingConfig& cfg,
                                                    PreferenceMethod method,
                                                    const data::DataTokenizer& tokenizer,
                                                    const data::RenderOptions& render,
                                                    AdapterMethod& adapter);

// The reference log-probs of every pair, in order, with the adapter off.
absl::StatusOr<ReferenceTable> PrecomputeReference(CausalLM& model, AdapterMethod& adapter,
                                                   const std::vector<data::PreferencePair>& pairs,
                                                   const TrainingConfig& cfg,
                                                   const torch::Device& device);

// A validation loader's options (SFT's and preference tuning's): the run's
// row length and packing, in file order.
data::LoaderOptions EvalLoaderOptions(const TrainingConfig& cfg);

// The preference loss and TRL's metrics over the validation pairs (no
// dropout, no gradients), in fixed order; shared out over the ranks as the
// SFT evaluation does.
absl::StatusOr<PreferenceMetrics> EvaluatePreference(CausalLM& model, AdapterMethod& adapter,
                                                     const PreferenceSetup& setup,
                                                     const TrainingConfig& cfg,
                                                     const torch::Device& device,
                                                     dist::World* world);

}  // namespace fjord::train::internal

#endif  // FJORD_RUNTIME_TRAIN_PREFERENCE_RUN_H_
