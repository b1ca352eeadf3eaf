// The reports of a comparison: per dataset (fjord.compare/1), the whole
// evaluation (fjord.evaluation/1), a table for people, the HTML page and a
// job's report directory.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lora/compare.h"
#include "lora/compare_internal.h"
#include "runtime/eval/report_html.h"
#include "runtime/eval/stats.h"
#include "runtime/util/env.h"
#include "runtime/util/status_macros.h"

namespace fjord::lora {

using nlohmann::json;
using nlohmann::ordered_json;

namespace internal {

// The report of one dataset (docs/comparison.md, "fjord.compare/1").
absl::StatusOr<ordered_json> DatasetReport(
    const EvaluationConfig& c, const Prepared& d, const std::vector<std::string>& all_metrics,
    const std::vector<std::string>& names, const std::vector<std::string>& adapters,
    const std::vector<std::string>& models, const std::vector<int>& group,
    const std::vector<Scores>& scores, bool replies, const ordered_json& judge) {
  const double confidence = 0.95;
  // Training data has no answers to score replies against.
  std::vector<std::string> metrics;
  for (const std::string& m : all_metrics) {
    if (d.answers || !IsReplyMetric(m)) metrics.push_back(m);
  }
  if (!d.answers) replies = false;
  ordered_json report;
  report["schema"] = "fjord.compare/1";
  report["model"] = c.model_name.empty() ? c.model : c.model_name;
  report["data"] = d.name;
  report["examples"] = d.size();
  report["kind"] = d.answers ? "answers" : "training_data";
  report["chat_template"] = c.chat_template;
  report["bootstrap"] = {{"iterations", c.bootstrap}, {"confidence", confidence}, {"seed", c.seed}};
  report["metrics"] = metrics;
  ordered_json candidates = ordered_json::array();
  for (size_t k = 0; k < scores.size(); ++k) {
    const Scores& r = scores[k];
    ordered_json cand;
    cand["name"] = names[k];
    cand["adapter"] = adapters[k].empty() ? ordered_json(nullptr) : ordered_json(adapters[k]);
    cand["model"] = models[k];
    ordered_json m, intervals;
    for (const std::string& name : metrics) {
      // Perplexity is exp(loss): exp of the mean per-example loss, its
      // interval exp of the loss's (exp is increasing), and its verdicts and
      // ranks those of the loss.
      const bool ppl = name == "perplexity";
      eval::BootstrapOptions opt;
      opt.iterations = static_cast<int>(c.bootstrap);
      opt.confidence = confidence;
      opt.seed = c.seed;
      FJORD_ASSIGN_OR_RETURN(eval::MeanInterval in,
                             eval::MeanBootstrap(r.per_example.at(ppl ? "loss" : name), opt));
      m[name] = ppl ? std::exp(in.mean) : in.mean;
      intervals[name] = {{"low", ppl ? std::exp(in.low) : in.low},
                         {"high", ppl ? std::exp(in.high) : in.high}};
    }
    cand["metrics"] = m;
    cand["intervals"] = intervals;
    ordered_json speed = {{"loss_tokens_per_s", r.answer_tokens / std::max(1e-9, r.loss_s)}};
    if (replies) {
      const model::GenerationStats& g = r.generation;
      speed["generated_tokens_per_s"] = r.new_tokens / std::max(1e-9, r.gen_s);
      speed["generated_tokens"] = r.new_tokens;
      speed["prefill_tokens_per_s"] =
          static_cast<double>(g.prefill_tokens) / std::max(1e-9, g.prefill_s);
      speed["decode_tokens_per_s"] =
          static_cast<double>(g.decode_tokens) / std::max(1e-9, g.decode_s);
    }
    cand["speed"] = speed;
    cand["peak_rss_bytes"] = r.peak_rss;
    if (r.peak_gpu >= 0) cand["peak_gpu_memory_bytes"] = r.peak_gpu;
    if (r.energy_j >= 0) cand["energy_joules"] = r.energy_j;
    candidates.push_back(cand);
  }
  report["candidates"] = candidates;
  ordered_json pairs = ordered_json::array();
  ordered_json ranking;
  for (const std::string& metric : metrics) {
    const bool ppl = metric == "perplexity";
    const std::string& compared = ppl ? std::string("loss") : metric;
    const bool higher = metric != "loss" && !ppl;
    const size_t k = scores.size();
    std::vector<std::vector<bool>> better(k, std::vector<bool>(k, false));
    for (size_t i = 0; i < k; ++i) {
      for (size_t j = i + 1; j < k; ++j) {
        // Losses of different tokenizers count different units: no pair.
        if (!IsReplyMetric(metric) && group[i] != group[j]) continue;
        eval::BootstrapOptions opt;
        opt.iterations = static_cast<int>(c.bootstrap);
        opt.confidence = confidence;
        opt.seed = c.seed;
        opt.higher_is_better = higher;
        FJORD_ASSIGN_OR_RETURN(eval::PairedDifference diff,
                               eval::PairedBootstrap(scores[i].per_example.at(compared),
                                                     scores[j].per_example.at(compared), opt));
        better[i][j] = diff.verdict == eval::Verdict::kBetter;
        better[j][i] = diff.verdict == eval::Verdict::kWorse;
        if (ppl) continue;  // the loss's pair says it
        pairs.push_back({{"metric", metric},
                         {"a", names[i]},
                         {"b", names[j]},
                         {"mean_difference", diff.mean},
                         {"low", diff.low},
                         {"high", diff.high},
                         {"verdict", eval::VerdictName(diff.verdict)}});
      }
    }
    const std::vector<int> ranks = eval::RankWithTies(better);
    ordered_json rows = ordered_json::array();
    for (size_t i = 0; i < k; ++i) {
      rows.push_back(
          {{"name", names[i]}, {"rank", ranks[i]}, {"mean", candidates[i]["metrics"][metric]}});
    }
    ranking[metric] = rows;
  }
  report["pairs"] = pairs;
  report["ranking"] = ranking;
  ordered_json samples = ordered_json::array();
  for (size_t i = 0; replies && i < d.questions.size() && static_cast<int64_t>(i) < c.samples;
       ++i) {
    ordered_json rs;
    for (size_t k = 0; k < scores.size(); ++k) rs[names[k]] = scores[k].replies[i];
    samples.push_back({{"line", d.questions[i].line},
                       {"prompt", d.questions[i].prompt},
                       {"answer", d.questions[i].answer},
                       {"replies", rs}});
  }
  report["samples"] = samples;
  if (!judge.is_null()) report["judge"] = judge;
  return report;
}

}  // namespace internal

ordered_json EvaluationReport(const EvaluationConfig& c, const std::vector<ordered_json>& reports) {
  ordered_json r;
  r["schema"] = "fjord.evaluation/1";
  r["job"] = c.job_id.empty() ? ordered_json(nullptr) : ordered_json(c.job_id);
  r["model"] = c.model_name.empty() ? c.model : c.model_name;
  r["datasets"] = reports;
  return r;
}

std::string ComparisonTable(const ordered_json& report) {
  std::string out = absl::StrCat(report.value("data", std::string()), " (",
                                 report.value("examples", 0), " examples)\n");
  std::vector<std::string> metrics;
  for (const auto& m : report["metrics"]) metrics.push_back(m.get<std::string>());
  absl::StrAppendFormat(&out, "%-16s", "candidate");
  for (const std::string& m : metrics) absl::StrAppendFormat(&out, " %12.12s", m);
  out += "\n";
  for (const auto& cand : report["candidates"]) {
    absl::StrAppendFormat(&out, "%-16.16s", cand["name"].get<std::string>());
    for (const std::string& m : metrics)
      absl::StrAppendFormat(&out, " %12.4f", cand["metrics"][m].get<double>());
    out += "\n";
  }
  for (const auto& p : report["pairs"]) {
    if (p["verdict"] == "tie") continue;
    absl::StrAppendFormat(&out, "%s: %s %s than %s (%.4f, 95%% interval [%.4f, %.4f])\n",
                          p["metric"].get<std::string>(), p["a"].get<std::string>(),
                          p["verdict"].get<std::string>(), p["b"].get<std::string>(),
                          p["mean_difference"].get<double>(), p["low"].get<double>(),
                          p["high"].get<double>());
  }
  return out;
}

absl::StatusOr<std::string> RenderReport(const ordered_json& report) {
  return eval::RenderReportHtml(json::parse(report.dump()));
}

absl::Status WriteEvaluationReport(const std::string& output_dir, const ordered_json& report) {
  Env* env = Env::Default();
  const std::string dir = output_dir + "/report";
  FJORD_RETURN_IF_ERROR(env->CreateDirs(dir));
  FJORD_ASSIGN_OR_RETURN(std::string page, RenderReport(report));
  FJORD_RETURN_IF_ERROR(env->WriteFileAtomic(dir + "/report.html", page));
  // report.json last: its presence means the report is whole.
  return env->WriteFileAtomic(dir + "/report.json", report.dump(2) + "\n");
}

}  // namespace fjord::lora
