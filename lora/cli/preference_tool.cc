// preference_tool: one batch of preference pairs through fjord's preference
// step (runtime/train/preference_step.h), for the TRL parity test
// (tests/interop/test_preference_trl.py) and the DPO-vs-SFT benchmark
// (docs/benchmarks.md).
//
//   preference_tool --config job.yaml [--adapter DIR] --out FILE.json
//       Every pair of data.train in one batch (file order): the tokens,
//       the policy's and the reference's summed response log-probs, each
//       pair's loss term and rewards, the batch loss and TRL's metrics, and
//       the gradient of the batch loss with respect to every LoRA weight.
//       --adapter loads a PEFT adapter's weights as the LoRA weights
//       (default: a fresh adapter from training.seed).
//   preference_tool --config job.yaml --bench STEPS [--adapter DIR]
//       Seconds per forward + backward of the same batch: SFT (cross-entropy
//       on the same response tokens), the method with the reference in the
//       step, the method with the reference precomputed, and the reference
//       pass alone; JSON on stdout.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "lora/job_config.h"
#include "lora/lora_method.h"
#include "nlohmann/json.hpp"
#include "runtime/data/loader.h"
#include "runtime/data/model_template.h"
#include "runtime/data/preference.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/preference_step.h"
#include "runtime/util/status_macros.h"

namespace fjord {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::vector<double> ToVector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

absl::Status Run(const std::string& config, const std::string& adapter_dir,
                 const std::string& out_path, int bench_steps) {
  FJORD_ASSIGN_OR_RETURN(lora::JobConfig cfg, lora::LoadJobConfig(config));
  FJORD_ASSIGN_OR_RETURN(std::optional<train::PreferenceMethod> method,
                         train::ParseTrainingMethod(cfg.training.method));
  if (!method) return absl::InvalidArgumentError("training.method must be dpo, orpo or simpo");
  train::PreferenceLossOptions loss;
  loss.method = *method;
  loss.loss_type = cfg.preference.loss_type;
  loss.beta = cfg.preference.beta;
  loss.label_smoothing = cfg.preference.label_smoothing;
  loss.simpo_gamma = cfg.preference.simpo_gamma;
  loss.cpo_alpha = cfg.preference.cpo_alpha;
  if (cfg.training.threads > 0) torch::set_num_threads(static_cast<int>(cfg.training.threads));
  at::globalContext().setFlushDenormal(true);
  torch::manual_seed(cfg.training.seed);

  model::LoadOptions load;
  load.dtype = torch::kFloat32;
  load.device = torch::kCPU;
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> model,
                         CausalLM::FromPretrained(cfg.model.path, load));
  lora::LoraMethod adapter(cfg);
  FJORD_RETURN_IF_ERROR(adapter.Attach(*model, cfg.training.seed));
  if (!adapter_dir.empty()) FJORD_RETURN_IF_ERROR(adapter.Load(adapter_dir));
  model->train();

  const std::string tok_path =
      cfg.data.tokenizer.empty() ? cfg.model.path + "/tokenizer.json" : cfg.data.tokenizer;
  FJORD_ASSIGN_OR_RETURN(auto tokenizer, tokenizer::Tokenizer::FromFile(tok_path));
  data::TokenizerAdapter data_tokenizer(*tokenizer);
  data::PreferenceOptions popt;
  FJORD_RETURN_IF_ERROR(
      data::ResolveChatTemplate(cfg.data.chat_template, cfg.model.path, &popt.render));
  popt.max_length = cfg.data.max_length;
  popt.truncate = cfg.data.truncate;
  FJORD_ASSIGN_OR_RETURN(data::PreferenceDataset set,
                         data::LoadPreferenceJsonl(cfg.data.train, data_tokenizer, popt));
  auto examples = std::make_shared<std::vector<data::Example>>();
  for (const data::PreferencePair& p : set.pairs) examples->push_back(data::PairAsExample(p));
  data::LoaderOptions lo;
  lo.seq_len = 2 * cfg.data.max_length;
  lo.packing = cfg.data.packing;
  lo.shuffle = false;
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  FJORD_ASSIGN_OR_RETURN(data::PackedBatch packed,
                         loader->NextBatch(static_cast<int64_t>(set.pairs.size())));
  const train::PreferenceBatch batch = train::MakePreferenceBatch(
      set.pairs, std::move(packed), torch::kCPU, train::NllTokensFor(loss));
  const auto params = adapter.TrainableParameters();
  const double n = static_cast<double>(batch.spans.size());
  const double nll_weight = train::NllWeight(loss);
  auto batch_loss = [&](const train::PreferenceForward& f) {
    torch::Tensor l = f.terms.losses.sum() / n;
    if (nll_weight != 0)
      l = l + nll_weight * f.policy.nll_sum / static_cast<double>(batch.nll_tokens);
    return l;
  };

  if (bench_steps > 0) {
    auto time = [&](const std::function<void()>& fn) {
      fn();  // warm-up
      const auto t0 = Clock::now();
      for (int i = 0; i < bench_steps; ++i) fn();
      return std::chrono::duration<double>(Clock::now() - t0).count() / bench_steps;
    };
    auto zero = [&] {
      for (auto& [name, p] : params) p.mutable_grad() = torch::Tensor();
    };
    // SFT on the same rows: every response token of both sequences as a target.
    torch::Tensor sft_targets = torch::full_like(batch.targets, data::kIgnoreIndex);
    for (const data::PairSpans& s : batch.spans) {
      for (const data::SequenceSpan* q : {&s.chosen, &s.rejected}) {
        sft_targets.view({-1})
            .narrow(0, q->offset + q->prompt_length - 1, q->response_length())
            .copy_(batch.targets.view({-1}).narrow(0, q->offset + q->prompt_length - 1,
                                                   q->response_length()));
      }
    }
    const double sft = time([&] {
      zero();
      torch::Tensor h = model->Hidden(batch.input_ids, batch.position_ids, batch.segment_ids);
      model->LossSum(h, sft_targets).backward();
    });
    const double in_step = time([&] {
      zero();
      batch_loss(train::ForwardPreference(*model, adapter, batch, loss, nullptr)).backward();
    });
    train::ReferenceTable table;
    {
      const train::PairLogps ref = train::ReferenceLogps(*model, adapter, batch, nullptr);
      table.chosen.assign(set.pairs.size(), 0.f);
      table.rejected.assign(set.pairs.size(), 0.f);
      for (size_t i = 0; i < batch.spans.size(); ++i) {
        table.chosen[static_cast<size_t>(batch.spans[i].pair)] = ref.chosen[i].item<float>();
        table.rejected[static_cast<size_t>(batch.spans[i].pair)] = ref.rejected[i].item<float>();
      }
    }
    const double precomputed = time([&] {
      zero();
      batch_loss(train::ForwardPreference(*model, adapter, batch, loss, &table)).backward();
    });
    const double reference = time([&] { train::ReferenceLogps(*model, adapter, batch, nullptr); });
    Json j = {{"pairs", n},
              {"tokens", batch.tokens},
              {"threads", torch::get_num_threads()},
              {"sft_s", sft},
              {"method_s", in_step},
              {"method_precomputed_ref_s", precomputed},
              {"reference_pass_s", reference}};
    std::printf("%s\n", j.dump(2).c_str());
    return absl::OkStatus();
  }

  const train::PreferenceForward f =
      train::ForwardPreference(*model, adapter, batch, loss, nullptr);
  torch::Tensor total = batch_loss(f);
  total.backward();
  train::PreferenceMetrics metrics;
  metrics.Add(f, total.item<double>());
  Json out;
  out["loss"] = total.item<double>();
  Json m = Json::object();
  for (const auto& [name, value] : metrics.Named(*method, "")) m[name] = value;
  out["metrics"] = m;
  const std::vector<double> pc = ToVector(f.policy.chosen), pr = ToVector(f.policy.rejected);
  const std::vector<double> losses = ToVector(f.terms.losses);
  const std::vector<double> rc = ToVector(f.terms.chosen_rewards),
                            rr = ToVector(f.terms.rejected_rewards);
  std::vector<double> ref_c, ref_r;
  if (f.ref.chosen.defined()) {
    ref_c = ToVector(f.ref.chosen);
    ref_r = ToVector(f.ref.rejected);
  }
  Json pairs = Json::array();
  for (size_t i = 0; i < batch.spans.size(); ++i) {
    const data::PreferencePair& p = set.pairs[static_cast<size_t>(batch.spans[i].pair)];
    Json j = {{"index", batch.spans[i].pair}, {"line", p.line},         {"prompt", p.prompt},
              {"chosen", p.chosen},           {"rejected", p.rejected}, {"logps_chosen", pc[i]},
              {"logps_rejected", pr[i]},      {"loss", losses[i]},      {"reward_chosen", rc[i]},
              {"reward_rejected", rr[i]}};
    if (!ref_c.empty()) {
      j["ref_logps_chosen"] = ref_c[i];
      j["ref_logps_rejected"] = ref_r[i];
    }
    pairs.push_back(j);
  }
  out["pairs"] = pairs;
  if (f.policy.nll_sum.defined()) {
    out["nll_loss"] = f.policy.nll_sum.item<double>() / static_cast<double>(batch.nll_tokens);
  }
  Json grads = Json::object();
  for (const auto& [name, p] : params) {
    grads[name] = p.grad().defined() ? ToVector(p.grad()) : ToVector(torch::zeros_like(p));
  }
  out["grads"] = grads;
  std::ofstream file(out_path);
  file << out.dump();
  if (!file.good()) return absl::UnavailableError(absl::StrCat("cannot write ", out_path));
  return absl::OkStatus();
}

}  // namespace
}  // namespace fjord

int main(int argc, char** argv) {
  std::string config, adapter, out;
  int bench = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--config")
      config = argv[i + 1];
    else if (a == "--adapter")
      adapter = argv[i + 1];
    else if (a == "--out")
      out = argv[i + 1];
    else if (a == "--bench")
      bench = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (config.empty() || (out.empty() && bench <= 0)) {
    std::fprintf(stderr,
                 "usage: preference_tool --config JOB.yaml [--adapter DIR] (--out FILE.json | "
                 "--bench STEPS)\n");
    return 2;
  }
  try {
    const absl::Status s = fjord::Run(config, adapter, out, bench);
    if (!s.ok()) {
      std::fprintf(stderr, "preference_tool: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "preference_tool: %s\n", e.what_without_backtrace());
    return 1;
  }
  return 0;
}
