// fjord-compare: evaluates a base model and LoRA adapters side by side on
// the same prompt/answer set, with paired statistics (issue 19's comparison
// tool, run locally; runtime/eval has its scoring and statistics).
//
//   fjord-compare --model DIR [--no-base] [--adapter NAME=DIR ...] --data FILE.jsonl
//       [--chat-template auto] [--max-new 64] [--batch 8] [--samples 5]
//       [--bootstrap 2000] [--seed 0] [--out report.json]
//
// Data: JSONL of {"prompt": ..., "answer": ...} (the held-out format;
// runtime/data/heldout.h), checked whole first: a bad line is an error
// naming the file, the line and the field, and nothing runs.
// Candidates: the base (unless --no-base) and each adapter, loaded one after
// another onto the one base in this process (the base is read once).
// For every candidate and example:
//   - the answer's loss given the prompt (teacher forcing over the answer's
//     tokens, the prompt rendered with the chat template as for generation):
//     mean per-token cross-entropy, perplexity over all answer tokens, and
//     token accuracy (argmax = the answer's token);
//   - a greedy reply (model/generation.h, batched on a KV cache, stopping at
//     the template's end-of-turn tokens) scored by exact match, normalised
//     exact match, contains and token F1 (runtime/eval/metrics.h);
//   - speed: scored tokens/s of the loss pass, new tokens/s of generation,
//     and the process's peak RSS after the candidate ran.
// For every pair and metric: the mean difference over examples with a seeded
// paired bootstrap interval and a verdict only where it excludes zero;
// per metric, ranks shared by candidates nothing separates.
// Writes the JSON report (docs/comparison.md has its fields) to --out, or to
// stdout, and a table to stderr.
//
// Exit status: 0 ok; 1 an error (the message names the file, line, field);
// 2 bad usage.
#include <sys/resource.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lora/adapter.h"
#include "runtime/data/heldout.h"
#include "runtime/eval/metrics.h"
#include "runtime/eval/stats.h"
#include "runtime/model/generation.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/generate.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::lora {
namespace {

using nlohmann::ordered_json;

constexpr char kUsage[] =
    "usage: fjord-compare --model DIR [--no-base] [--adapter NAME=DIR ...] --data FILE.jsonl\n"
    "           [--chat-template auto] [--max-new 64] [--batch 8] [--samples 5]\n"
    "           [--bootstrap 2000] [--seed 0] [--out report.json]\n";

struct Args {
  std::string model, data, out, chat_template = "auto";
  bool base = true;
  std::vector<std::pair<std::string, std::string>> adapters;  // name, dir
  int64_t max_new = 64, batch = 8, samples = 5, bootstrap = 2000;
  uint64_t seed = 0;
};

// Per candidate: one score per example for each metric, plus totals.
struct CandidateResult {
  std::string name, adapter;
  std::map<std::string, std::vector<double>> per_example;  // metric -> scores
  std::vector<std::string> replies;
  double answer_tokens = 0, nll_sum = 0, correct = 0;
  double loss_s = 0, gen_s = 0, new_tokens = 0;
  int64_t peak_rss = 0;
};

int64_t PeakRss() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The loss pass and the replies of the model as it stands (base, or with an
// adapter injected).
absl::Status Evaluate(model::CausalLM& lm, const tokenizer::Tokenizer& tok,
                      const std::vector<data::HeldoutQuestion>& questions,
                      const std::vector<std::vector<int32_t>>& prompts,
                      const std::vector<std::vector<int32_t>>& answers, const Args& args,
                      CandidateResult& r) {
  lm.eval();
  // Teacher-forced answers: [prompt, answer] per example, one at a time.
  auto t0 = std::chrono::steady_clock::now();
  FJORD_RETURN_IF_ERROR(TorchCall("answer loss", [&]() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < questions.size(); ++i) {
      std::vector<int64_t> ids(prompts[i].begin(), prompts[i].end());
      ids.insert(ids.end(), answers[i].begin(), answers[i].end());
      const int64_t t = static_cast<int64_t>(ids.size()),
                    p = static_cast<int64_t>(prompts[i].size());
      const int64_t a = t - p;
      torch::Tensor x = torch::tensor(ids, torch::kInt64).view({1, t});
      torch::Tensor pos = torch::arange(t, torch::kInt64).view({1, t});
      // Positions p-1 .. t-2 predict the answer's tokens.
      torch::Tensor logits =
          lm.Logits(lm.Hidden(x.to(lm.device()), pos.to(lm.device()), torch::Tensor())
                        .narrow(1, p - 1, a))
              .squeeze(0)
              .cpu();  // (A, V)
      torch::Tensor target = x.narrow(1, p, a).squeeze(0);
      torch::Tensor nll = torch::nll_loss(logits.log_softmax(-1), target, {}, at::Reduction::None);
      const double sum = nll.sum().item<double>();
      r.per_example["loss"].push_back(sum / static_cast<double>(a));
      const double right = logits.argmax(-1).eq(target).sum().item<double>();
      r.per_example["token_accuracy"].push_back(right / static_cast<double>(a));
      r.nll_sum += sum;
      r.correct += right;
      r.answer_tokens += static_cast<double>(a);
    }
  }));
  r.loss_s = Since(t0);

  // Greedy replies, batched.
  model::GenerationOptions opt;
  opt.max_new_tokens = args.max_new;
  opt.stop_ids = train::EndOfTurnIds(tok);
  t0 = std::chrono::steady_clock::now();
  for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(args.batch)) {
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(args.batch));
    std::vector<std::vector<int32_t>> chunk(prompts.begin() + start, prompts.begin() + end);
    FJORD_ASSIGN_OR_RETURN(std::vector<model::Generated> out, model::Generate(lm, chunk, opt));
    for (const model::Generated& g : out) {
      r.replies.push_back(tok.Decode(g.ids, /*skip_special_tokens=*/true));
      r.new_tokens += static_cast<double>(g.ids.size());
    }
  }
  r.gen_s = Since(t0);
  for (size_t i = 0; i < questions.size(); ++i) {
    for (const std::string& m : eval::AnswerMetricNames()) {
      FJORD_ASSIGN_OR_RETURN(double s, eval::Score(m, r.replies[i], questions[i].answer));
      r.per_example[m].push_back(s);
    }
  }
  r.peak_rss = PeakRss();
  return absl::OkStatus();
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

absl::StatusOr<ordered_json> Run(const Args& args) {
  FJORD_ASSIGN_OR_RETURN(data::HeldoutSet set, data::LoadHeldoutJsonl(args.data));
  if (set.questions.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(args.data, ": no questions"));
  }
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                         tokenizer::Tokenizer::FromFile(args.model + "/tokenizer.json"));
  std::vector<std::vector<int32_t>> prompts, answers;
  for (const data::HeldoutQuestion& q : set.questions) {
    FJORD_ASSIGN_OR_RETURN(std::vector<int32_t> p,
                           train::ChatPromptIds(*tok, args.chat_template, q.prompt, args.model));
    std::vector<int32_t> a = tok->Encode(q.answer);
    if (p.empty() || a.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(args.data, ": line ", q.line, ": field '",
                                                     p.empty() ? "prompt" : "answer",
                                                     "' renders to no tokens"));
    }
    prompts.push_back(std::move(p));
    answers.push_back(std::move(a));
  }
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<model::CausalLM> lm,
                         model::CausalLM::FromPretrained(args.model, torch::kFloat32, torch::kCPU));
  std::vector<CandidateResult> results;
  if (args.base) {
    results.push_back({.name = "base"});
    FJORD_RETURN_IF_ERROR(
        Evaluate(*lm, *tok, set.questions, prompts, answers, args, results.back()));
  }
  for (const auto& [name, dir] : args.adapters) {
    results.push_back({.name = name, .adapter = dir});
    FJORD_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter,
                           LoraAdapter::FromPretrained(*lm, dir));
    FJORD_RETURN_IF_ERROR(
        Evaluate(*lm, *tok, set.questions, prompts, answers, args, results.back()));
    adapter->Detach();  // the base again, for the next adapter
  }

  // Every metric: per candidate mean; per pair the bootstrap; ranks.
  std::vector<std::string> metrics = {"loss", "token_accuracy"};
  for (const std::string& m : eval::AnswerMetricNames()) metrics.push_back(m);
  ordered_json report;
  report["schema"] = "fjord.compare/1";
  report["model"] = args.model;
  report["data"] = args.data;
  report["examples"] = set.questions.size();
  report["chat_template"] = args.chat_template;
  report["bootstrap"] = {{"iterations", args.bootstrap}, {"confidence", 0.95}, {"seed", args.seed}};
  ordered_json candidates = ordered_json::array();
  for (const CandidateResult& r : results) {
    ordered_json c;
    c["name"] = r.name;
    c["adapter"] = r.adapter.empty() ? ordered_json(nullptr) : ordered_json(r.adapter);
    ordered_json m;
    for (const std::string& name : metrics) m[name] = Mean(r.per_example.at(name));
    m["perplexity"] = std::exp(r.nll_sum / r.answer_tokens);
    c["metrics"] = m;
    c["speed"] = {{"loss_tokens_per_s", (r.answer_tokens) / std::max(1e-9, r.loss_s)},
                  {"generated_tokens_per_s", r.new_tokens / std::max(1e-9, r.gen_s)},
                  {"generated_tokens", r.new_tokens}};
    c["peak_rss_bytes"] = r.peak_rss;
    candidates.push_back(c);
  }
  report["candidates"] = candidates;
  ordered_json pairs = ordered_json::array();
  ordered_json ranking;
  for (const std::string& metric : metrics) {
    const bool higher = metric != "loss";
    const size_t k = results.size();
    std::vector<std::vector<bool>> better(k, std::vector<bool>(k, false));
    for (size_t i = 0; i < k; ++i) {
      for (size_t j = i + 1; j < k; ++j) {
        eval::BootstrapOptions opt;
        opt.iterations = static_cast<int>(args.bootstrap);
        opt.seed = args.seed;
        opt.higher_is_better = higher;
        FJORD_ASSIGN_OR_RETURN(eval::PairedDifference d,
                               eval::PairedBootstrap(results[i].per_example.at(metric),
                                                     results[j].per_example.at(metric), opt));
        better[i][j] = d.verdict == eval::Verdict::kBetter;
        better[j][i] = d.verdict == eval::Verdict::kWorse;
        pairs.push_back({{"metric", metric},
                         {"a", results[i].name},
                         {"b", results[j].name},
                         {"mean_difference", d.mean},
                         {"low", d.low},
                         {"high", d.high},
                         {"verdict", eval::VerdictName(d.verdict)}});
      }
    }
    const std::vector<int> ranks = eval::RankWithTies(better);
    ordered_json rows = ordered_json::array();
    for (size_t i = 0; i < k; ++i) {
      rows.push_back({{"name", results[i].name},
                      {"rank", ranks[i]},
                      {"mean", Mean(results[i].per_example.at(metric))}});
    }
    ranking[metric] = rows;
  }
  report["pairs"] = pairs;
  report["ranking"] = ranking;
  ordered_json samples = ordered_json::array();
  for (size_t i = 0; i < set.questions.size() && static_cast<int64_t>(i) < args.samples; ++i) {
    ordered_json replies;
    for (const CandidateResult& r : results) replies[r.name] = r.replies[i];
    samples.push_back({{"line", set.questions[i].line},
                       {"prompt", set.questions[i].prompt},
                       {"answer", set.questions[i].answer},
                       {"replies", replies}});
  }
  report["samples"] = samples;

  // The table, on stderr.
  std::fprintf(stderr, "%-16s %9s %9s %9s %9s %9s %9s\n", "candidate", "loss", "ppl", "tok acc",
               "norm EM", "contains", "F1");
  for (const auto& c : candidates) {
    const auto& m = c["metrics"];
    std::fprintf(stderr, "%-16s %9.4f %9.3f %9.3f %9.3f %9.3f %9.3f\n",
                 c["name"].get<std::string>().c_str(), m["loss"].get<double>(),
                 m["perplexity"].get<double>(), m["token_accuracy"].get<double>(),
                 m["normalized_exact_match"].get<double>(), m["contains"].get<double>(),
                 m["token_f1"].get<double>());
  }
  for (const auto& p : pairs) {
    if (p["verdict"] == "tie") continue;
    std::fprintf(stderr, "%s: %s %s than %s (%.4f, 95%% interval [%.4f, %.4f])\n",
                 p["metric"].get<std::string>().c_str(), p["a"].get<std::string>().c_str(),
                 p["verdict"].get<std::string>().c_str(), p["b"].get<std::string>().c_str(),
                 p["mean_difference"].get<double>(), p["low"].get<double>(),
                 p["high"].get<double>());
  }
  return report;
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-base") {
      args.base = false;
      continue;
    }
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::cerr << "fjord-compare: bad argument '" << a << "'\n" << kUsage;
      return 2;
    }
    const std::string v = argv[++i];
    bool ok = true;
    if (a == "--model") {
      args.model = v;
    } else if (a == "--data") {
      args.data = v;
    } else if (a == "--out") {
      args.out = v;
    } else if (a == "--chat-template") {
      args.chat_template = v;
    } else if (a == "--adapter") {
      std::pair<std::string, std::string> nd = absl::StrSplit(v, absl::MaxSplits('=', 1));
      ok = !nd.first.empty() && !nd.second.empty() && nd.first != "base";
      args.adapters.push_back(nd);
    } else if (a == "--max-new") {
      ok = absl::SimpleAtoi(v, &args.max_new) && args.max_new >= 0;
    } else if (a == "--batch") {
      ok = absl::SimpleAtoi(v, &args.batch) && args.batch > 0;
    } else if (a == "--samples") {
      ok = absl::SimpleAtoi(v, &args.samples) && args.samples >= 0;
    } else if (a == "--bootstrap") {
      ok = absl::SimpleAtoi(v, &args.bootstrap) && args.bootstrap > 0;
    } else if (a == "--seed") {
      ok = absl::SimpleAtoi(v, &args.seed);
    } else {
      std::cerr << "fjord-compare: unknown flag '" << a << "'\n" << kUsage;
      return 2;
    }
    if (!ok) {
      std::cerr << "fjord-compare: bad value for " << a << ": '" << v << "'\n" << kUsage;
      return 2;
    }
  }
  if (args.model.empty() || args.data.empty() || (!args.base && args.adapters.empty())) {
    std::cerr << "fjord-compare: --model, --data and at least one candidate are required\n"
              << kUsage;
    return 2;
  }
  absl::StatusOr<ordered_json> report = Run(args);
  if (!report.ok()) {
    std::cerr << "fjord-compare: " << report.status() << "\n";
    return 1;
  }
  const std::string text = report->dump(2) + "\n";
  if (args.out.empty()) {
    std::cout << text;
  } else {
    std::ofstream f(args.out);
    f << text;
    if (!f.good()) {
      std::cerr << "fjord-compare: cannot write " << args.out << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace fjord::lora

int main(int argc, char** argv) { return fjord::lora::Main(argc, argv); }
