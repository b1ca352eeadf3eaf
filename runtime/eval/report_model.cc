#include "runtime/eval/report_model.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "runtime/util/status_macros.h"

namespace fjord::eval::report_model {
namespace {

using nlohmann::json;

std::string Field(const std::string& path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}
std::string Index(const std::string& path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

absl::Status Bad(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("report field '", field, "': ", what));
}

// obj[key], or nullptr when it is absent or null.
const json* Get(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ReadString(const json& obj, const std::string& path, const char* key, bool required,
                        std::string& out) {
  const json* v = Get(obj, key);
  if (v == nullptr) return required ? Bad(Field(path, key), "missing") : absl::OkStatus();
  if (!v->is_string()) return Bad(Field(path, key), "expected a string");
  out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadNumber(const json& obj, const std::string& path, const char* key, double& out) {
  const json* v = Get(obj, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return Bad(Field(path, key), "expected a number");
  out = v->get<double>();
  return absl::OkStatus();
}

// An optional field that must be an object / an array when present.
absl::StatusOr<const json*> OptObject(const json& obj, const std::string& path, const char* key) {
  const json* v = Get(obj, key);
  if (v != nullptr && !v->is_object()) return Bad(Field(path, key), "expected an object");
  return v;
}
absl::StatusOr<const json*> OptArray(const json& obj, const std::string& path, const char* key) {
  const json* v = Get(obj, key);
  if (v != nullptr && !v->is_array()) return Bad(Field(path, key), "expected an array");
  return v;
}

absl::Status ReadInterval(const json& v, const std::string& path, Interval& out) {
  if (!v.is_object()) return Bad(path, "expected an object {\"low\": x, \"high\": y}");
  FJORD_RETURN_IF_ERROR(ReadNumber(v, path, "low", out.low));
  FJORD_RETURN_IF_ERROR(ReadNumber(v, path, "high", out.high));
  return absl::OkStatus();
}

// The metrics in display order: the ones fjord-compare writes in the order of
// its table, then any others by name.
std::vector<std::string> MetricOrder(const std::vector<Candidate>& candidates) {
  static const char* const kKnown[] = {
      "loss",     "perplexity", "token_accuracy", "exact_match", "normalized_exact_match",
      "contains", "token_f1"};
  std::set<std::string> all;
  for (const Candidate& c : candidates) {
    for (const auto& [m, v] : c.metrics) all.insert(m);
  }
  std::vector<std::string> out;
  for (const char* m : kKnown) {
    if (all.erase(m) > 0) out.push_back(m);
  }
  out.insert(out.end(), all.begin(), all.end());
  return out;
}

absl::Status ReadCandidate(const json& v, const std::string& path, Candidate& c) {
  if (!v.is_object()) return Bad(path, "expected an object");
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "name", /*required=*/true, c.name));
  if (c.name.empty()) return Bad(Field(path, "name"), "empty");
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "adapter", false, c.adapter));
  const json* metrics = Get(v, "metrics");
  if (metrics == nullptr) return Bad(Field(path, "metrics"), "missing");
  if (!metrics->is_object()) return Bad(Field(path, "metrics"), "expected an object");
  for (const auto& [m, x] : metrics->items()) {
    if (x.is_null()) {
      c.metrics[m] = kNaN;  // not finite in the writer (JSON has no NaN)
    } else if (x.is_number()) {
      c.metrics[m] = x.get<double>();
    } else {
      return Bad(Field(Field(path, "metrics"), m), "expected a number");
    }
  }
  FJORD_ASSIGN_OR_RETURN(const json* intervals, OptObject(v, path, "intervals"));
  if (intervals != nullptr) {
    for (const auto& [m, x] : intervals->items()) {
      if (x.is_null()) continue;
      FJORD_RETURN_IF_ERROR(ReadInterval(x, Field(Field(path, "intervals"), m), c.intervals[m]));
    }
  }
  FJORD_ASSIGN_OR_RETURN(const json* speed, OptObject(v, path, "speed"));
  if (speed != nullptr) {
    const std::string sp = Field(path, "speed");
    c.has_speed = true;
    FJORD_RETURN_IF_ERROR(ReadNumber(*speed, sp, "loss_tokens_per_s", c.loss_tokens_per_s));
    FJORD_RETURN_IF_ERROR(
        ReadNumber(*speed, sp, "generated_tokens_per_s", c.generated_tokens_per_s));
    FJORD_RETURN_IF_ERROR(ReadNumber(*speed, sp, "generated_tokens", c.generated_tokens));
    FJORD_RETURN_IF_ERROR(ReadNumber(*speed, sp, "prefill_tokens_per_s", c.prefill_tokens_per_s));
    FJORD_RETURN_IF_ERROR(ReadNumber(*speed, sp, "decode_tokens_per_s", c.decode_tokens_per_s));
  }
  FJORD_RETURN_IF_ERROR(ReadNumber(v, path, "peak_rss_bytes", c.peak_rss_bytes));
  FJORD_RETURN_IF_ERROR(ReadNumber(v, path, "peak_gpu_memory_bytes", c.peak_gpu_memory_bytes));
  return absl::OkStatus();
}

absl::Status ReadJudge(const json& v, const std::string& path, Judge& j) {
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "model", false, j.model));
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "prompt", false, j.prompt));
  FJORD_ASSIGN_OR_RETURN(const json* pairs, OptArray(v, path, "pairs"));
  if (pairs == nullptr) return absl::OkStatus();
  for (size_t i = 0; i < pairs->size(); ++i) {
    const json& p = (*pairs)[i];
    const std::string pp = Index(Field(path, "pairs"), i);
    if (!p.is_object()) return Bad(pp, "expected an object");
    JudgePair jp;
    FJORD_RETURN_IF_ERROR(ReadString(p, pp, "a", true, jp.a));
    FJORD_RETURN_IF_ERROR(ReadString(p, pp, "b", true, jp.b));
    FJORD_RETURN_IF_ERROR(ReadString(p, pp, "verdict", false, jp.verdict));
    FJORD_RETURN_IF_ERROR(ReadNumber(p, pp, "examples", jp.examples));
    FJORD_RETURN_IF_ERROR(ReadNumber(p, pp, "wins_a", jp.wins_a));
    FJORD_RETURN_IF_ERROR(ReadNumber(p, pp, "wins_b", jp.wins_b));
    FJORD_RETURN_IF_ERROR(ReadNumber(p, pp, "ties", jp.ties));
    FJORD_RETURN_IF_ERROR(ReadNumber(p, pp, "agreement", jp.agreement));
    FJORD_ASSIGN_OR_RETURN(const json* rate, OptObject(p, pp, "win_rate_a"));
    if (rate != nullptr) {
      const std::string rp = Field(pp, "win_rate_a");
      FJORD_RETURN_IF_ERROR(ReadNumber(*rate, rp, "mean", jp.win_rate_a));
      FJORD_RETURN_IF_ERROR(ReadInterval(*rate, rp, jp.win_rate_a_interval));
    }
    j.pairs.push_back(std::move(jp));
  }
  return absl::OkStatus();
}

absl::Status ReadSample(const json& v, const std::string& path, Sample& s) {
  if (!v.is_object()) return Bad(path, "expected an object");
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "prompt", true, s.prompt));
  s.has_answer = Get(v, "answer") != nullptr;
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "answer", false, s.answer));
  if (const json* line = Get(v, "line"); line != nullptr) {
    if (!line->is_number_integer()) return Bad(Field(path, "line"), "expected an integer");
    s.line = line->get<int64_t>();
  }
  FJORD_ASSIGN_OR_RETURN(const json* replies, OptObject(v, path, "replies"));
  if (replies != nullptr) {
    for (const auto& [name, r] : replies->items()) {
      if (r.is_null()) continue;
      if (!r.is_string()) return Bad(Field(Field(path, "replies"), name), "expected a string");
      s.replies[name] = r.get<std::string>();
    }
  }
  return absl::OkStatus();
}

// One "fjord.compare/1" report; `path` prefixes the field names in errors.
absl::Status ReadComparison(const json& v, const std::string& path, bool schema_required,
                            Dataset& d) {
  const std::string where = path.empty() ? "report" : path;
  if (!v.is_object()) return Bad(where, "expected a JSON object");
  std::string schema;
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "schema", schema_required, schema));
  if (!schema.empty() && schema != "fjord.compare/1") {
    return Bad(Field(path, "schema"),
               absl::StrCat("expected \"fjord.compare/1\", got \"", schema, "\""));
  }
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "name", false, d.name));
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "data", false, d.data));
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "model", false, d.model));
  FJORD_RETURN_IF_ERROR(ReadString(v, path, "chat_template", false, d.chat_template));
  if (const json* n = Get(v, "examples"); n != nullptr) {
    if (!n->is_number_integer() || n->get<int64_t>() < 0) {
      return Bad(Field(path, "examples"), "expected a non-negative integer");
    }
    d.examples = n->get<int64_t>();
  }
  FJORD_ASSIGN_OR_RETURN(const json* bootstrap, OptObject(v, path, "bootstrap"));
  if (bootstrap != nullptr) {
    const std::string bp = Field(path, "bootstrap");
    FJORD_RETURN_IF_ERROR(ReadNumber(*bootstrap, bp, "iterations", d.bootstrap_iterations));
    FJORD_RETURN_IF_ERROR(ReadNumber(*bootstrap, bp, "confidence", d.confidence));
    FJORD_RETURN_IF_ERROR(ReadNumber(*bootstrap, bp, "seed", d.seed));
  }

  const std::string cp = Field(path, "candidates");
  const json* candidates = Get(v, "candidates");
  if (candidates == nullptr) return Bad(cp, "missing");
  if (!candidates->is_array()) return Bad(cp, "expected an array");
  if (candidates->empty()) return Bad(cp, "empty: a report has at least one candidate");
  std::set<std::string> names;
  for (size_t i = 0; i < candidates->size(); ++i) {
    Candidate c;
    FJORD_RETURN_IF_ERROR(ReadCandidate((*candidates)[i], Index(cp, i), c));
    if (!names.insert(c.name).second) {
      return Bad(Field(Index(cp, i), "name"), absl::StrCat("\"", c.name, "\" appears twice"));
    }
    d.candidates.push_back(std::move(c));
  }
  d.metrics = MetricOrder(d.candidates);

  FJORD_ASSIGN_OR_RETURN(const json* pairs, OptArray(v, path, "pairs"));
  if (pairs != nullptr) {
    d.has_pairs = true;
    for (size_t i = 0; i < pairs->size(); ++i) {
      const json& p = (*pairs)[i];
      const std::string pp = Index(Field(path, "pairs"), i);
      if (!p.is_object()) return Bad(pp, "expected an object");
      Pair pair;
      FJORD_RETURN_IF_ERROR(ReadString(p, pp, "metric", true, pair.metric));
      FJORD_RETURN_IF_ERROR(ReadString(p, pp, "a", true, pair.a));
      FJORD_RETURN_IF_ERROR(ReadString(p, pp, "b", true, pair.b));
      FJORD_RETURN_IF_ERROR(ReadString(p, pp, "verdict", false, pair.verdict));
      FJORD_RETURN_IF_ERROR(ReadNumber(p, pp, "mean_difference", pair.mean_difference));
      FJORD_RETURN_IF_ERROR(ReadInterval(p, pp, pair.interval));
      d.pairs.push_back(std::move(pair));
    }
  }

  FJORD_ASSIGN_OR_RETURN(const json* ranking, OptObject(v, path, "ranking"));
  if (ranking != nullptr) {
    const std::string rp = Field(path, "ranking");
    std::map<std::string, std::vector<RankEntry>> by_metric;
    for (const auto& [m, rows] : ranking->items()) {
      const std::string mp = Field(rp, m);
      if (!rows.is_array()) return Bad(mp, "expected an array");
      std::vector<RankEntry>& out = by_metric[m];
      for (size_t i = 0; i < rows.size(); ++i) {
        const std::string ep = Index(mp, i);
        if (!rows[i].is_object()) return Bad(ep, "expected an object");
        RankEntry e;
        FJORD_RETURN_IF_ERROR(ReadString(rows[i], ep, "name", true, e.name));
        const json* rank = Get(rows[i], "rank");
        if (rank == nullptr) return Bad(Field(ep, "rank"), "missing");
        if (!rank->is_number_integer() || rank->get<int64_t>() < 1) {
          return Bad(Field(ep, "rank"), "expected an integer >= 1");
        }
        e.rank = rank->get<int64_t>();
        FJORD_RETURN_IF_ERROR(ReadNumber(rows[i], ep, "mean", e.mean));
        out.push_back(std::move(e));
      }
      // Best first; the report's order among equals.
      std::stable_sort(out.begin(), out.end(),
                       [](const RankEntry& x, const RankEntry& y) { return x.rank < y.rank; });
    }
    for (const std::string& m : d.metrics) {
      auto it = by_metric.find(m);
      if (it == by_metric.end()) continue;
      d.ranking.emplace_back(m, std::move(it->second));
      by_metric.erase(it);
    }
    for (auto& [m, rows] : by_metric) d.ranking.emplace_back(m, std::move(rows));
  }

  FJORD_ASSIGN_OR_RETURN(const json* judge, OptObject(v, path, "judge"));
  if (judge != nullptr) {
    d.has_judge = true;
    FJORD_RETURN_IF_ERROR(ReadJudge(*judge, Field(path, "judge"), d.judge));
  }

  FJORD_ASSIGN_OR_RETURN(const json* samples, OptArray(v, path, "samples"));
  if (samples != nullptr) {
    for (size_t i = 0; i < samples->size(); ++i) {
      Sample s;
      FJORD_RETURN_IF_ERROR(ReadSample((*samples)[i], Index(Field(path, "samples"), i), s));
      d.samples.push_back(std::move(s));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Report> ReadReport(const json& v) {
  if (!v.is_object()) return Bad("report", "expected a JSON object");
  Report r;
  std::string schema;
  FJORD_RETURN_IF_ERROR(ReadString(v, "", "schema", /*required=*/true, schema));
  if (schema == "fjord.compare/1") {
    r.datasets.emplace_back();
    FJORD_RETURN_IF_ERROR(ReadComparison(v, "", true, r.datasets.back()));
    r.model = r.datasets.back().model;
    return r;
  }
  if (schema != "fjord.evaluation/1") {
    return Bad("schema",
               absl::StrCat("expected \"fjord.compare/1\" or \"fjord.evaluation/1\", got \"",
                            schema, "\""));
  }
  r.evaluation = true;
  FJORD_RETURN_IF_ERROR(ReadString(v, "", "job", false, r.job));
  FJORD_RETURN_IF_ERROR(ReadString(v, "", "model", false, r.model));
  const json* datasets = Get(v, "datasets");
  if (datasets == nullptr) return Bad("datasets", "missing");
  if (!datasets->is_array()) return Bad("datasets", "expected an array");
  if (datasets->empty()) return Bad("datasets", "empty: an evaluation has at least one dataset");
  for (size_t i = 0; i < datasets->size(); ++i) {
    r.datasets.emplace_back();
    FJORD_RETURN_IF_ERROR(ReadComparison((*datasets)[i], Index("datasets", i),
                                         /*schema_required=*/false, r.datasets.back()));
  }
  return r;
}

}  // namespace fjord::eval::report_model
