// Preference losses in plain LibTorch ops (they act on N numbers per batch;
// the heavy part, the log-probabilities, goes through CausalLM::LossSum).
//
// Shape legend: N pairs, B rows, T tokens per row, C hidden.
#include "runtime/train/preference_loss.h"

#include <torch/nn/functional/activation.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fjord::train {
namespace {

namespace F = torch::nn::functional;

// log(1 − e^x) for x < 0, stable on both sides of −ln 2 (as TRL's log1mexp).
torch::Tensor Log1mExp(const torch::Tensor& x) {
  return torch::where(x < -0.6931471805599453, torch::log1p(-torch::exp(x)),
                      torch::log(-torch::expm1(x)));
}

// −(1−ε)·logσ(z) − ε·logσ(−z)
torch::Tensor SmoothedSigmoidLoss(const torch::Tensor& z, double smoothing) {
  torch::Tensor loss = -(1 - smoothing) * F::logsigmoid(z);
  if (smoothing != 0) loss = loss - smoothing * F::logsigmoid(-z);
  return loss;
}

}  // namespace

double NllWeight(const PreferenceLossOptions& options) {
  switch (options.method) {
    case PreferenceMethod::kOrpo:
      return 1.0;
    case PreferenceMethod::kSimpo:
      return options.cpo_alpha;
    case PreferenceMethod::kDpo:
      break;
  }
  return 0.0;
}

NllTokens NllTokensFor(const PreferenceLossOptions& options) {
  if (options.method == PreferenceMethod::kOrpo) return NllTokens::kChosenSequence;
  if (options.method == PreferenceMethod::kSimpo && options.cpo_alpha != 0)
    return NllTokens::kChosenResponse;
  return NllTokens::kNone;
}

PreferenceTerms PreferenceLoss(const PreferenceLossOptions& options, const PairLogps& policy,
                               const PairLogps& ref) {
  const double beta = options.beta;
  const double eps = options.label_smoothing;
  PreferenceTerms out;
  if (options.method == PreferenceMethod::kDpo) {
    const torch::Tensor chosen_ratio = policy.chosen - ref.chosen;        // (N)
    const torch::Tensor rejected_ratio = policy.rejected - ref.rejected;  // (N)
    const torch::Tensor delta = chosen_ratio - rejected_ratio;            // (N)
    if (options.loss_type == "robust") {
      out.losses = (-(1 - eps) * F::logsigmoid(beta * delta) + eps * F::logsigmoid(-beta * delta)) /
                   (1 - 2 * eps);
    } else if (options.loss_type == "hinge") {
      out.losses = torch::relu(1 - beta * delta);
    } else if (options.loss_type == "ipo") {
      const torch::Tensor d = chosen_ratio / policy.chosen_tokens.clamp_min(1) -
                              rejected_ratio / policy.rejected_tokens.clamp_min(1);
      out.losses = (d - 1 / (2 * beta)).pow(2);
    } else {  // sigmoid
      out.losses = SmoothedSigmoidLoss(beta * delta, eps);
    }
    out.chosen_rewards = beta * chosen_ratio.detach();
    out.rejected_rewards = beta * rejected_ratio.detach();
    out.chosen_logps = policy.chosen.detach();
    out.rejected_logps = policy.rejected.detach();
    return out;
  }
  // ORPO and SimPO score the average log-probability per response token.
  const torch::Tensor chosen = policy.chosen / policy.chosen_tokens.clamp_min(1);        // (N)
  const torch::Tensor rejected = policy.rejected / policy.rejected_tokens.clamp_min(1);  // (N)
  if (options.method == PreferenceMethod::kOrpo) {
    const torch::Tensor log_odds = (chosen - rejected) - (Log1mExp(chosen) - Log1mExp(rejected));
    out.losses = -beta * F::logsigmoid(log_odds);
    out.log_odds = log_odds.detach();
  } else {  // SimPO
    out.losses = SmoothedSigmoidLoss(beta * (chosen - rejected - options.simpo_gamma / beta), eps);
  }
  out.chosen_rewards = beta * chosen.detach();
  out.rejected_rewards = beta * rejected.detach();
  out.chosen_logps = chosen.detach();
  out.rejected_logps = rejected.detach();
  return out;
}

PairLogps SequenceLogps(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& targets,
                        const std::vector<data::PairSpans>& spans, NllTokens nll) {
  const int64_t c = hidden.size(2);
  const torch::Tensor h = hidden.reshape({-1, c});  // (B·T, C)
  const torch::Tensor y = targets.reshape({-1});    // (B·T)
  // A sharded base: one call for every token (each LossSum would gather
  // lm_head, and ranks hold different numbers of spans).
  const torch::Tensor token_nll =
      model.shard_group() != nullptr ? model.TokenLosses(hidden, targets) : torch::Tensor();
  // −Σ log p(target) over `count` targets from flat index `from`.
  auto nll_of = [&](int64_t from, int64_t count) {
    if (token_nll.defined()) return token_nll.narrow(0, from, count).sum();
    return model.LossSum(h.narrow(0, from, count).unsqueeze(0),
                         y.narrow(0, from, count).unsqueeze(0));
  };
  const int64_t n = static_cast<int64_t>(spans.size());
  std::vector<torch::Tensor> chosen, rejected;
  std::vector<float> chosen_tokens, rejected_tokens;
  PairLogps out;
  torch::Tensor nll_sum = torch::zeros({}, h.options().dtype(torch::kFloat32));
  for (const data::PairSpans& s : spans) {
    for (const data::SequenceSpan* seq : {&s.chosen, &s.rejected}) {
      // The target at t predicts token t + 1: response tokens are predicted
      // from prompt_length − 1 on, up to the span's second-to-last token.
      const int64_t count = seq->response_length();
      const torch::Tensor response_nll = nll_of(seq->offset + seq->prompt_length - 1, count);
      if (seq == &s.chosen) {
        chosen.push_back(-response_nll);
        chosen_tokens.push_back(static_cast<float>(count));
        if (nll == NllTokens::kChosenResponse) {
          nll_sum = nll_sum + response_nll;
          out.nll_tokens += count;
        } else if (nll == NllTokens::kChosenSequence) {
          nll_sum = nll_sum + response_nll;
          if (seq->prompt_length > 1)
            nll_sum = nll_sum + nll_of(seq->offset, seq->prompt_length - 1);
          out.nll_tokens += seq->length - 1;
        }
      } else {
        rejected.push_back(-response_nll);
        rejected_tokens.push_back(static_cast<float>(count));
      }
    }
  }
  const torch::TensorOptions f32 = torch::TensorOptions().dtype(torch::kFloat32).device(h.device());
  out.chosen = n > 0 ? torch::stack(chosen) : torch::zeros({0}, f32);
  out.rejected = n > 0 ? torch::stack(rejected) : torch::zeros({0}, f32);
  out.chosen_tokens = torch::tensor(chosen_tokens, torch::kFloat32).to(h.device());
  out.rejected_tokens = torch::tensor(rejected_tokens, torch::kFloat32).to(h.device());
  if (nll != NllTokens::kNone) out.nll_sum = nll_sum;
  if (token_nll.defined()) out.anchor = token_nll.sum() * 0.0;
  return out;
}

absl::StatusOr<std::optional<PreferenceMethod>> ParseTrainingMethod(absl::string_view name) {
  if (name == "sft") return std::optional<PreferenceMethod>();
  if (name == "dpo") return std::optional<PreferenceMethod>(PreferenceMethod::kDpo);
  if (name == "orpo") return std::optional<PreferenceMethod>(PreferenceMethod::kOrpo);
  if (name == "simpo") return std::optional<PreferenceMethod>(PreferenceMethod::kSimpo);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown training method '", name, "'; expected sft, dpo, orpo or simpo"));
}

}  // namespace fjord::train
