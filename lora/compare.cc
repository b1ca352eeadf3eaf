#include "lora/compare.h"

#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lora/adapter.h"
#include "lora/compare_internal.h"
#include "lora/peft_format.h"
#include "runtime/data/dataset.h"
#include "runtime/data/heldout.h"
#include "runtime/data/model_template.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/eval/judge.h"
#include "runtime/eval/metrics.h"
#include "runtime/eval/report_html.h"
#include "runtime/eval/stats.h"
#include "runtime/model/config.h"
#include "runtime/model/generation.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/generate.h"
#include "runtime/train/trainer.h"
#include "runtime/util/env.h"
#include "runtime/util/nvml.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::lora {

using nlohmann::json;
using nlohmann::ordered_json;

// ---- validation -------------------------------------------------------------------

namespace {

// True when the file's first line that is not blank has an "answer" key
// (the prompt/answer format); else it is training data.
bool IsAnswerSet(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    return j.is_object() && j.contains("answer");
  }
  return true;  // empty: reported as "no questions"
}

// The chat template and rendering training data uses (fjord-train's
// data.chat_template, the model's own template under auto).
absl::StatusOr<data::DataOptions> TrainingDataOptions(const EvaluationConfig& c) {
  data::DataOptions o;
  FJORD_RETURN_IF_ERROR(data::ResolveChatTemplate(c.chat_template, c.model, &o.render));
  o.render.train_on_inputs = false;
  return o;
}

}  // namespace

json ValidateEvaluation(const EvaluationConfig& c) {
  json out = {{"valid", true}};
  json datasets = json::array();
  for (const EvaluationConfig::Dataset& d : c.datasets) {
    json e = {{"name", d.name.empty() ? d.path : d.name}};
    if (!IsAnswerSet(d.path)) {
      // Training data: checked as fjord-train checks it, with the base's
      // tokenizer and chat template.
      absl::StatusOr<data::ValidationReport> r = [&]() -> absl::StatusOr<data::ValidationReport> {
        FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                               tokenizer::Tokenizer::FromFile(c.model + "/tokenizer.json"));
        data::TokenizerAdapter adapter(*tok);
        FJORD_ASSIGN_OR_RETURN(data::DataOptions o, TrainingDataOptions(c));
        return data::ValidateJsonl(d.path, adapter, o);
      }();
      if (!r.ok()) {
        out["valid"] = false;
        e["error"] = std::string(r.status().message());
      } else {
        json rj = json::parse(r->ToJson());
        for (auto it = rj.begin(); it != rj.end(); ++it) e[it.key()] = it.value();
        if (!r->ok()) out["valid"] = false;
      }
      datasets.push_back(e);
      continue;
    }
    absl::StatusOr<data::HeldoutReport> r = data::ValidateHeldoutJsonl(d.path);
    if (!r.ok()) {
      out["valid"] = false;
      e["error"] = std::string(r.status().message());
    } else {
      json rj = json::parse(r->ToJson());
      for (auto it = rj.begin(); it != rj.end(); ++it) e[it.key()] = it.value();
      if (!r->ok()) out["valid"] = false;
      if (r->ok() && r->questions == 0) {
        out["valid"] = false;
        e["error"] = absl::StrCat(d.path, ": no questions");
      }
    }
    datasets.push_back(e);
  }
  out["datasets"] = datasets;
  // The first problem elsewhere, in the order a run would meet it.
  absl::Status other = [&]() -> absl::Status {
    for (const std::string& dir : {c.model, c.judge}) {
      if (dir.empty()) continue;
      FJORD_RETURN_IF_ERROR(model::ModelConfig::FromFile(dir + "/config.json").status());
      FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                             tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json"));
      FJORD_RETURN_IF_ERROR(
          train::ChatPromptIds(*tok, dir == c.model ? c.chat_template : "auto", "ping", dir)
              .status());
    }
    for (const EvaluationConfig::Candidate& k : c.candidates) {
      const std::string config_path =
          k.adapter.empty() ? k.adapter_config : k.adapter + "/adapter_config.json";
      if (config_path.empty()) continue;
      FJORD_ASSIGN_OR_RETURN(std::string text, Env::Default()->ReadFileToString(config_path));
      absl::Status s = ParseAdapterConfig(text, config_path).status();
      if (!s.ok()) {
        return absl::Status(s.code(), absl::StrCat("candidate '", k.name, "': ", s.message()));
      }
      const std::string weights =
          k.adapter.empty() ? k.adapter_model : k.adapter + "/adapter_model.safetensors";
      if (!Env::Default()->FileExists(weights)) {
        return absl::NotFoundError(
            absl::StrCat("candidate '", k.name, "': no adapter weights at ", weights));
      }
    }
    return absl::OkStatus();
  }();
  if (!other.ok()) {
    out["valid"] = false;
    out["error"] = std::string(other.message());
  }
  return out;
}

// ---- running ------------------------------------------------------------------------

namespace {

using internal::DatasetReport;
using internal::IsReplyMetric;
using internal::Mean;
using internal::Prepared;
using internal::Scores;

int64_t PeakRss() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

absl::Status Stopped(const EvaluationOptions& o) {
  if (o.stop_requested != nullptr && o.stop_requested->load()) {
    return absl::AbortedError("stopped");
  }
  return absl::OkStatus();
}

// Greedy replies to `prompts`, batched (left-padded, one KV cache per batch).
absl::StatusOr<std::vector<std::string>> Replies(model::CausalLM& lm,
                                                 const tokenizer::Tokenizer& tok,
                                                 const std::vector<std::vector<int32_t>>& prompts,
                                                 int64_t max_new, int64_t batch,
                                                 const EvaluationOptions& o, double* new_tokens,
                                                 model::GenerationStats* stats = nullptr) {
  model::GenerationOptions opt;
  opt.max_new_tokens = max_new;
  opt.stats = stats;
  opt.stop_ids = train::EndOfTurnIds(tok);
  std::vector<std::string> out;
  for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(batch)) {
    FJORD_RETURN_IF_ERROR(Stopped(o));
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch));
    std::vector<std::vector<int32_t>> chunk(prompts.begin() + start, prompts.begin() + end);
    FJORD_ASSIGN_OR_RETURN(std::vector<model::Generated> gen, model::Generate(lm, chunk, opt));
    for (const model::Generated& g : gen) {
      out.push_back(tok.Decode(g.ids, /*skip_special_tokens=*/true));
      if (new_tokens != nullptr) *new_tokens += static_cast<double>(g.ids.size());
    }
  }
  return out;
}

// The loss pass and the replies of the model as it stands (base, or with an
// adapter injected) on one dataset.
absl::Status Score(model::CausalLM& lm, const tokenizer::Tokenizer& tok, const Prepared& d,
                   const EvaluationConfig& c, bool replies, const EvaluationOptions& o, Scores& r) {
  lm.eval();
  train::ResetPeakMemory(lm.device());
  // Teacher-forced: each example's trained tokens (an answer, or the
  // assistant turns), one example at a time.
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < d.size(); ++i) {
    if (i % 8 == 0) FJORD_RETURN_IF_ERROR(Stopped(o));
    FJORD_RETURN_IF_ERROR(TorchCall("answer loss", [&]() {
      torch::NoGradGuard no_grad;
      const data::Example& e = d.examples[i];
      const int64_t t = static_cast<int64_t>(e.input_ids.size());
      std::vector<int64_t> at, target;  // positions that predict a trained token
      for (int64_t j = 0; j < t; ++j) {
        if (e.targets[static_cast<size_t>(j)] == data::kIgnoreIndex) continue;
        at.push_back(j);
        target.push_back(e.targets[static_cast<size_t>(j)]);
      }
      const int64_t a = static_cast<int64_t>(at.size());
      torch::Tensor x =
          torch::tensor(std::vector<int64_t>(e.input_ids.begin(), e.input_ids.end()), torch::kInt64)
              .view({1, t});
      torch::Tensor pos = torch::arange(t, torch::kInt64).view({1, t});
      torch::Tensor hidden = lm.Hidden(x.to(lm.device()), pos.to(lm.device()), torch::Tensor())
                                 .squeeze(0)
                                 .index_select(0, torch::tensor(at, torch::kInt64).to(lm.device()));
      torch::Tensor logits = lm.Logits(hidden).to(torch::kCPU, torch::kFloat32);  // (A, V)
      torch::Tensor want = torch::tensor(target, torch::kInt64);
      torch::Tensor nll = torch::nll_loss(logits.log_softmax(-1), want, {}, at::Reduction::None);
      const double sum = nll.sum().item<double>();
      r.per_example["loss"].push_back(sum / static_cast<double>(a));
      const double right = logits.argmax(-1).eq(want).sum().item<double>();
      r.per_example["token_accuracy"].push_back(right / static_cast<double>(a));
      r.answer_tokens += static_cast<double>(a);
    }));
  }
  r.loss_s = Since(t0);
  if (replies && d.answers) {
    t0 = std::chrono::steady_clock::now();
    FJORD_ASSIGN_OR_RETURN(r.replies, Replies(lm, tok, d.prompts, c.max_new_tokens, c.batch_size, o,
                                              &r.new_tokens, &r.generation));
    r.gen_s = Since(t0);
    for (size_t i = 0; i < d.questions.size(); ++i) {
      for (const std::string& m : eval::AnswerMetricNames()) {
        FJORD_ASSIGN_OR_RETURN(double s, eval::Score(m, r.replies[i], d.questions[i].answer));
        r.per_example[m].push_back(s);
      }
    }
  }
  r.peak_rss = PeakRss();
  if (lm.device().is_cuda()) r.peak_gpu = train::PeakMemoryBytes(lm.device());
  return absl::OkStatus();
}

absl::StatusOr<Prepared> Prepare(const EvaluationConfig& c, const EvaluationConfig::Dataset& ds,
                                 const tokenizer::Tokenizer& tok) {
  Prepared p;
  p.name = ds.name.empty() ? ds.path : ds.name;
  p.answers = IsAnswerSet(ds.path);
  if (!p.answers) {
    data::TokenizerAdapter adapter(tok);
    FJORD_ASSIGN_OR_RETURN(data::DataOptions o, TrainingDataOptions(c));
    FJORD_ASSIGN_OR_RETURN(data::Dataset set, data::LoadJsonl(ds.path, adapter, o));
    for (data::Example& e : set.examples) {
      if (data::CountTrained(e.targets) > 0) p.examples.push_back(std::move(e));
    }
    if (p.examples.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(ds.path, ": no example has trained tokens"));
    }
    return p;
  }
  FJORD_ASSIGN_OR_RETURN(data::HeldoutSet set, data::LoadHeldoutJsonl(ds.path));
  if (set.questions.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(ds.path, ": no questions"));
  }
  for (const data::HeldoutQuestion& q : set.questions) {
    FJORD_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                           train::ChatPromptIds(tok, c.chat_template, q.prompt, c.model));
    std::vector<int32_t> answer = tok.Encode(q.answer);
    if (prompt.empty() || answer.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(ds.path, ": line ", q.line, ": field '",
                                                     prompt.empty() ? "prompt" : "answer",
                                                     "' renders to no tokens"));
    }
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), answer.begin(), answer.end());
    std::vector<bool> trained(ids.size(), false);
    std::fill(trained.begin() + static_cast<std::ptrdiff_t>(prompt.size()), trained.end(), true);
    data::Example e = data::MakeExample(ids, trained);
    e.line = q.line;
    p.examples.push_back(std::move(e));
    p.prompts.push_back(std::move(prompt));
  }
  p.questions = std::move(set.questions);
  return p;
}

torch::Device DeviceFor(const std::string& device) {
  const bool cuda = device == "cuda" || (device == "auto" && torch::cuda::is_available());
  return cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

// <output_dir>/adapters/<name>/ holding copies of an uploaded adapter's two
// files (LoraAdapter reads a directory).
absl::StatusOr<std::string> MaterializeAdapter(const EvaluationConfig& c,
                                               const EvaluationConfig::Candidate& k) {
  if (!k.adapter.empty() || k.adapter_config.empty()) return k.adapter;
  if (c.output_dir.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "candidate '", k.name, "': an adapter given as two files needs an output directory"));
  }
  Env* env = Env::Default();
  const std::string dir = absl::StrCat(c.output_dir, "/adapters/", k.name);
  FJORD_RETURN_IF_ERROR(env->CreateDirs(dir));
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{k.adapter_config, "adapter_config.json"},
        {k.adapter_model, "adapter_model.safetensors"}}) {
    FJORD_ASSIGN_OR_RETURN(std::string bytes, env->ReadFileToString(from));
    FJORD_RETURN_IF_ERROR(env->WriteFileAtomic(dir + "/" + to, bytes));
  }
  return dir;
}

// Every pair of candidates judged on every dataset by the judge model (in
// both orders: eval::JudgePair), the answers given as references. One
// "judge" object per dataset.
absl::StatusOr<std::vector<ordered_json>> JudgeAll(const EvaluationConfig& c,
                                                   const std::vector<Prepared>& datasets,
                                                   const std::vector<std::string>& names,
                                                   const std::vector<std::vector<Scores>>& scores,
                                                   torch::Dtype dtype, torch::Device device,
                                                   const EvaluationOptions& o,
                                                   EvaluationProgress& progress) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                         tokenizer::Tokenizer::FromFile(c.judge + "/tokenizer.json"));
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<model::CausalLM> judge,
                         model::CausalLM::FromPretrained(c.judge, dtype, device));
  judge->eval();
  // A verdict is one token ("1" or "2"); a few more let a chatty judge's
  // "Reply 1" through.
  constexpr int64_t kJudgeNewTokens = 8;
  const eval::JudgeFn fn =
      [&](const std::vector<std::string>& prompts) -> absl::StatusOr<std::vector<std::string>> {
    std::vector<std::vector<int32_t>> ids;
    for (const std::string& p : prompts) {
      FJORD_ASSIGN_OR_RETURN(std::vector<int32_t> one,
                             train::ChatPromptIds(*tok, "auto", p, c.judge));
      ids.push_back(std::move(one));
    }
    return Replies(*judge, *tok, ids, kJudgeNewTokens, c.batch_size, o, nullptr);
  };
  std::vector<ordered_json> out;
  for (size_t d = 0; d < datasets.size(); ++d) {
    if (!datasets[d].answers) {  // training data: no replies to judge
      out.push_back(nullptr);
      continue;
    }
    std::vector<std::string> questions, references;
    for (const data::HeldoutQuestion& q : datasets[d].questions) {
      questions.push_back(q.prompt);
      references.push_back(q.answer);
    }
    ordered_json pairs = ordered_json::array();
    for (size_t i = 0; i < names.size(); ++i) {
      for (size_t j = i + 1; j < names.size(); ++j) {
        eval::BootstrapOptions opt;
        opt.iterations = static_cast<int>(c.bootstrap);
        opt.seed = c.seed;
        FJORD_ASSIGN_OR_RETURN(eval::PairJudgement pj,
                               eval::JudgePair(questions, references, scores[d][i].replies,
                                               scores[d][j].replies, fn, opt));
        pairs.push_back({{"a", names[i]},
                         {"b", names[j]},
                         {"examples", pj.examples},
                         {"wins_a", pj.wins_a},
                         {"wins_b", pj.wins_b},
                         {"ties", pj.ties},
                         {"identical", pj.identical},
                         {"unparseable", pj.unparseable},
                         {"agreement", pj.agreement},
                         {"win_rate_a",
                          {{"mean", pj.win_rate_a.mean},
                           {"low", pj.win_rate_a.low},
                           {"high", pj.win_rate_a.high}}},
                         {"verdict", eval::VerdictName(pj.verdict)}});
        ++progress.done;
        progress.message = absl::StrFormat(
            "judge on %s: %s %lld wins, %s %lld wins, %lld ties (agreement %.2f)", datasets[d].name,
            names[i], static_cast<long long>(pj.wins_a), names[j],
            static_cast<long long>(pj.wins_b), static_cast<long long>(pj.ties), pj.agreement);
        if (o.on_progress) o.on_progress(progress);
      }
    }
    out.push_back({{"model", c.judge},
                   {"prompt", eval::JudgePrompt("{question}", "{reply 1}", "{reply 2}",
                                                "{reference answer}")},
                   {"pairs", pairs}});
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<ordered_json>> RunEvaluation(const EvaluationConfig& c,
                                                        const EvaluationOptions& o) {
  std::vector<std::string> metrics;
  for (const std::string& m : ComparisonMetrics()) {
    bool wanted = c.metrics.empty();
    for (const std::string& w : c.metrics) wanted = wanted || w == m;
    if (wanted) metrics.push_back(m);
  }
  bool replies = c.samples > 0 || !c.judge.empty();
  for (const std::string& m : metrics) replies = replies || IsReplyMetric(m);

  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                         tokenizer::Tokenizer::FromFile(c.model + "/tokenizer.json"));
  std::vector<Prepared> datasets;
  for (const EvaluationConfig::Dataset& ds : c.datasets) {
    FJORD_ASSIGN_OR_RETURN(Prepared p, Prepare(c, ds, *tok));
    datasets.push_back(std::move(p));
  }
  const torch::Device device = DeviceFor(c.device);
  const torch::Dtype dtype = device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;

  const size_t nc = c.candidates.size(), nd = datasets.size();
  EvaluationProgress progress;
  progress.total = static_cast<int64_t>(nc * nd);
  for (const Prepared& d : datasets) {
    if (!c.judge.empty() && d.answers) progress.total += static_cast<int64_t>(nc * (nc - 1) / 2);
  }
  // The candidates base by base: each base read once, its tokenizer
  // rendering the data for its candidates. Bases whose tokenizer.json is
  // the same bytes share a tokenizer group: only within one are losses
  // compared (tokens of different tokenizers are not the same units).
  std::vector<std::string> bases, base_of(nc), tokenizers;
  std::vector<int> group(nc);
  for (size_t k = 0; k < nc; ++k) {
    base_of[k] = c.candidates[k].model.empty() ? c.model : c.candidates[k].model;
    if (std::find(bases.begin(), bases.end(), base_of[k]) == bases.end()) {
      bases.push_back(base_of[k]);
      FJORD_ASSIGN_OR_RETURN(std::string t,
                             Env::Default()->ReadFileToString(base_of[k] + "/tokenizer.json"));
      tokenizers.push_back(std::move(t));
    }
  }
  for (size_t k = 0; k < nc; ++k) {
    const size_t b =
        static_cast<size_t>(std::find(bases.begin(), bases.end(), base_of[k]) - bases.begin());
    group[k] = static_cast<int>(std::find(tokenizers.begin(), tokenizers.end(), tokenizers[b]) -
                                tokenizers.begin());
  }
  // The GPU's energy counter, where NVML is there (the device's NVML index:
  // the first of CUDA_VISIBLE_DEVICES, PCI bus order as fjordd sets it).
  std::string no_nvml;
  std::unique_ptr<Nvml> nvml = device.is_cuda() ? Nvml::Load(&no_nvml) : nullptr;
  int nvml_index = 0;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    if (!absl::SimpleAtoi(std::string(visible).substr(0, std::string(visible).find(',')),
                          &nvml_index)) {
      nvml = nullptr;  // a UUID: not an index
    }
  }
  // scores[dataset][candidate]
  std::vector<std::vector<Scores>> scores(nd, std::vector<Scores>(nc));
  std::vector<std::string> names(nc), adapters(nc), models(nc);
  for (const std::string& base : bases) {
    std::unique_ptr<tokenizer::Tokenizer> own_tok;
    std::vector<Prepared> own;
    const tokenizer::Tokenizer* btok = tok.get();
    const std::vector<Prepared>* bdata = &datasets;
    if (base != c.model) {
      FJORD_ASSIGN_OR_RETURN(own_tok, tokenizer::Tokenizer::FromFile(base + "/tokenizer.json"));
      EvaluationConfig on_base = c;
      on_base.model = base;
      for (size_t d = 0; d < nd; ++d) {
        FJORD_ASSIGN_OR_RETURN(Prepared p, Prepare(on_base, c.datasets[d], *own_tok));
        if (p.size() != datasets[d].size()) {
          return absl::InvalidArgumentError(absl::StrCat(
              datasets[d].name, ": ", datasets[d].size(), " examples have trained tokens under ",
              c.model, " and ", p.size(), " under ", base, "; the candidates cannot be compared"));
        }
        own.push_back(std::move(p));
      }
      btok = own_tok.get();
      bdata = &own;
    }
    FJORD_ASSIGN_OR_RETURN(std::shared_ptr<model::CausalLM> lm,
                           model::CausalLM::FromPretrained(base, dtype, device));
    for (size_t k = 0; k < nc; ++k) {
      if (base_of[k] != base) continue;
      const EvaluationConfig::Candidate& cand = c.candidates[k];
      names[k] = cand.name;
      models[k] = cand.model.empty() ? (c.model_name.empty() ? c.model : c.model_name)
                                     : (cand.model_name.empty() ? cand.model : cand.model_name);
      FJORD_ASSIGN_OR_RETURN(std::string dir, MaterializeAdapter(c, cand));
      adapters[k] = dir;
      std::unique_ptr<LoraAdapter> adapter;
      if (!dir.empty()) {
        absl::StatusOr<std::unique_ptr<LoraAdapter>> loaded = LoraAdapter::FromPretrained(*lm, dir);
        if (!loaded.ok()) {
          return absl::Status(
              loaded.status().code(),
              absl::StrCat("candidate '", cand.name, "': ", loaded.status().message()));
        }
        adapter = *std::move(loaded);
      }
      for (size_t d = 0; d < nd; ++d) {
        // Millijoules, -1 when NVML cannot say.
        auto energy_mj = [&]() -> int64_t {
          if (!nvml) return -1;
          const std::optional<uint64_t> e = nvml->TotalEnergyMillijoules(nvml_index);
          return e ? static_cast<int64_t>(*e) : -1;
        };
        const int64_t mj0 = energy_mj();
        FJORD_RETURN_IF_ERROR(Score(*lm, *btok, (*bdata)[d], c, replies, o, scores[d][k]));
        const int64_t mj1 = energy_mj();
        if (mj0 >= 0 && mj1 >= mj0) {
          scores[d][k].energy_j = static_cast<double>(mj1 - mj0) / 1000.0;
        }
        ++progress.done;
        const Scores& sc = scores[d][k];
        progress.message = absl::StrFormat("%s on %s: loss %.4f", cand.name, datasets[d].name,
                                           Mean(sc.per_example.at("loss")));
        if (replies && datasets[d].answers) {
          absl::StrAppendFormat(&progress.message, ", contains %.3f",
                                Mean(sc.per_example.at("contains")));
        }
        if (o.on_progress) o.on_progress(progress);
      }
      if (adapter) adapter->Detach();  // the base again, for the next candidate
    }
  }
  // The judge, after the candidates (their base is released first).
  std::vector<ordered_json> judged(nd);
  if (!c.judge.empty()) {
    FJORD_ASSIGN_OR_RETURN(judged,
                           JudgeAll(c, datasets, names, scores, dtype, device, o, progress));
  }
  std::vector<ordered_json> reports;
  for (size_t d = 0; d < nd; ++d) {
    FJORD_ASSIGN_OR_RETURN(ordered_json r,
                           DatasetReport(c, datasets[d], metrics, names, adapters, models, group,
                                         scores[d], replies, judged[d]));
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace fjord::lora
