#include "sdk/cpp/cli/compare.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "daemon/protocol/errors.h"
#include "runtime/util/status_macros.h"
#include "sdk/cpp/cli/exit_codes.h"
#include "sdk/cpp/cli/render.h"

namespace fjord::cli {
namespace {

using nlohmann::json;

constexpr const char* kAdapterFileNames[] = {"adapter_config.json", "adapter_model.safetensors"};

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
  });
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// "0.900 [0.800, 1.000]": three decimals, or one for values of 100 and more
// (perplexity).
std::string WithInterval(double mean, const json* interval) {
  const char* f = std::fabs(mean) >= 100 ? "%.1f" : "%.3f";
  std::string out = absl::StrFormat(f, mean);
  if (interval != nullptr && interval->is_object() && (*interval)["low"].is_number() &&
      (*interval)["high"].is_number()) {
    absl::StrAppend(&out, " [", absl::StrFormat(f, (*interval)["low"].get<double>()), ", ",
                    absl::StrFormat(f, (*interval)["high"].get<double>()), "]");
  }
  return out;
}

const json* Find(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::string Text(const json& j, const char* key) {
  const json* v = Find(j, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

// One dataset's report (fjord.compare/1) as text.
absl::StatusOr<std::string> RenderDataset(const json& ds, size_t index) {
  const std::string where = absl::StrCat("datasets[", index, "]");
  const json* cands = Find(ds, "candidates");
  if (cands == nullptr || !cands->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an evaluation report: ", where, ".candidates is not an array"));
  }
  std::string out = absl::StrCat("dataset ", Text(ds, "data"));
  if (const json* n = Find(ds, "examples"); n != nullptr && n->is_number_integer())
    absl::StrAppend(&out, " (", n->get<int64_t>(), " examples)");
  absl::StrAppend(&out, "\n");
  // The metrics' columns, in the protocol's order, then any the report adds.
  std::vector<std::string> metrics;
  for (const char* m : protocol::kEvalMetricNames) {
    for (const json& cand : *cands) {
      const json* ms = Find(cand, "metrics");
      if (ms != nullptr && ms->is_object() && ms->contains(m)) {
        metrics.push_back(m);
        break;
      }
    }
  }
  for (const json& cand : *cands) {
    const json* ms = Find(cand, "metrics");
    if (ms == nullptr || !ms->is_object()) continue;
    for (auto it = ms->begin(); it != ms->end(); ++it) {
      if (std::find(metrics.begin(), metrics.end(), it.key()) == metrics.end())
        metrics.push_back(it.key());
    }
  }
  std::vector<std::string> header = {"CANDIDATE"};
  for (std::string m : metrics) {
    std::transform(m.begin(), m.end(), m.begin(),
                   [](unsigned char ch) { return std::toupper(ch); });
    header.push_back(m);
  }
  std::vector<std::vector<std::string>> rows;
  for (const json& cand : *cands) {
    std::vector<std::string> row = {Text(cand, "name")};
    const json* ms = Find(cand, "metrics");
    const json* iv = Find(cand, "intervals");
    for (const std::string& m : metrics) {
      const json* v = ms != nullptr ? Find(*ms, m.c_str()) : nullptr;
      row.push_back(
          v != nullptr && v->is_number()
              ? WithInterval(v->get<double>(), iv != nullptr ? Find(*iv, m.c_str()) : nullptr)
              : "-");
    }
    rows.push_back(std::move(row));
  }
  absl::StrAppend(&out, Table(header, rows));
  // Verdicts: only the pairs whose interval excludes zero.
  std::vector<std::string> verdicts;
  if (const json* pairs = Find(ds, "pairs"); pairs != nullptr && pairs->is_array()) {
    for (const json& p : *pairs) {
      const std::string verdict = Text(p, "verdict");
      if (verdict.empty() || verdict == "tie") continue;
      const json* d = Find(p, "mean_difference");
      const json* lo = Find(p, "low");
      const json* hi = Find(p, "high");
      std::string diff;
      if (d != nullptr && d->is_number() && lo != nullptr && lo->is_number() && hi != nullptr &&
          hi->is_number()) {
        diff = absl::StrFormat(" (A - B %+.3f [%+.3f, %+.3f])", d->get<double>(), lo->get<double>(),
                               hi->get<double>());
      }
      verdicts.push_back(absl::StrCat("  ", Text(p, "metric"), ": ", Text(p, "a"), " ", verdict,
                                      " than ", Text(p, "b"), diff));
    }
  }
  absl::StrAppend(&out, "verdicts (95% interval of the difference excludes 0):\n",
                  verdicts.empty() ? "  none: no pair is separated on any metric\n"
                                   : absl::StrCat(absl::StrJoin(verdicts, "\n"), "\n"));
  // Ranks: 1 + the number of candidates significantly better.
  if (const json* ranking = Find(ds, "ranking"); ranking != nullptr && ranking->is_object()) {
    absl::StrAppend(&out, "ranks (1 = best; shared where nothing separates them):\n");
    std::vector<std::string> order;
    for (const char* m : protocol::kEvalMetricNames) {
      if (ranking->contains(m)) order.push_back(m);
    }
    for (auto it = ranking->begin(); it != ranking->end(); ++it) {
      if (std::find(order.begin(), order.end(), it.key()) == order.end()) order.push_back(it.key());
    }
    for (const std::string& m : order) {
      const json& ranks = (*ranking)[m];
      if (!ranks.is_array()) continue;
      std::vector<std::pair<int64_t, std::string>> rs;
      for (const json& r : ranks) {
        const json* n = Find(r, "rank");
        rs.push_back(
            {n != nullptr && n->is_number_integer() ? n->get<int64_t>() : 0, Text(r, "name")});
      }
      std::stable_sort(rs.begin(), rs.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<std::string> parts;
      for (const auto& [rank, name] : rs) parts.push_back(absl::StrCat(rank, " ", name));
      absl::StrAppend(&out, "  ", m, ": ", absl::StrJoin(parts, ", "), "\n");
    }
  }
  if (const json* judge = Find(ds, "judge"); judge != nullptr && judge->is_object()) {
    absl::StrAppend(&out, "judge ", Text(*judge, "model"), ":\n");
    if (const json* pairs = Find(*judge, "pairs"); pairs != nullptr && pairs->is_array()) {
      for (const json& p : *pairs) {
        std::string line = absl::StrCat("  ", Text(p, "a"), " vs ", Text(p, "b"), ": ");
        const std::string verdict = Text(p, "verdict");
        absl::StrAppend(&line, verdict.empty() || verdict == "tie"
                                   ? std::string("tie")
                                   : absl::StrCat(Text(p, "a"), " ", verdict));
        const json* w = Find(p, "win_rate_a");
        if (w != nullptr && w->is_object() && (*w)["mean"].is_number()) {
          absl::StrAppend(&line, ", win rate of ", Text(p, "a"), " ",
                          WithInterval((*w)["mean"].get<double>(), w));
        }
        auto count = [&](const char* key) {
          const json* v = Find(p, key);
          return v != nullptr && v->is_number_integer() ? v->get<int64_t>() : 0;
        };
        absl::StrAppend(&line, " (", count("wins_a"), " wins, ", count("wins_b"), " losses, ",
                        count("ties"), " ties");
        if (count("unparseable") > 0)
          absl::StrAppend(&line, ", ", count("unparseable"), " unparseable");
        if (const json* a = Find(p, "agreement"); a != nullptr && a->is_number())
          absl::StrAppend(&line,
                          absl::StrFormat("; both orders agree on %.0f%%", 100 * a->get<double>()));
        absl::StrAppend(&out, line, ")\n");
      }
    }
  }
  return out;
}

std::vector<std::string> OptionValues(const Ctx& c, const char* name) { return c.args.All(name); }

// Downloads the report of `job_id` into --out DIR (or a temporary directory,
// removed after) and shows it: tables, or with --json {"report": ...}; --html
// copies report.html there.
int ShowReport(Ctx& c, Client& client, const std::string& job_id) {
  const std::optional<std::string> out_dir = c.args.Get("out");
  std::string dir;
  if (out_dir) {
    dir = *out_dir;
  } else {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fjord-report-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return Fail(c, absl::PermissionDeniedError(absl::StrCat("cannot create a directory ", tmpl)));
    }
    dir = tmpl;
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      if (!dir.empty()) std::filesystem::remove_all(dir);
    }
  } cleanup{out_dir ? std::string() : dir};
  absl::StatusOr<std::vector<protocol::AdapterFile>> files = client.DownloadReport(job_id, dir);
  if (!files.ok()) return Fail(c, files.status());
  std::ifstream in(dir + "/report.json", std::ios::binary);
  if (!in) {
    return Fail(c,
                absl::InternalError(absl::StrCat("the report of ", job_id, " has no report.json")));
  }
  std::stringstream text;
  text << in.rdbuf();
  json report = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (report.is_discarded() || !report.is_object() ||
      report.value("schema", "") != "fjord.evaluation/1") {
    return Fail(
        c, absl::InternalError(absl::StrCat("report.json of ", job_id,
                                            " is not an evaluation report (fjord.evaluation/1)")));
  }
  if (auto html = c.args.Get("html")) {
    std::error_code ec;
    std::filesystem::copy_file(dir + "/report.html", *html,
                               std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) {
      return Fail(
          c, absl::PermissionDeniedError(absl::StrCat("cannot write ", *html, ": ", ec.message())));
    }
  }
  if (c.json_out) {
    c.PrintJson(json{{"report", report}});
    return kExitOk;
  }
  absl::StatusOr<std::string> tables = RenderEvaluationReport(report);
  if (!tables.ok()) return Fail(c, absl::InternalError(tables.status().message()));
  c.Print(*tables);
  if (out_dir) c.Print(absl::StrCat("report: ", dir, "/report.json, ", dir, "/report.html\n"));
  if (auto html = c.args.Get("html")) c.Print(absl::StrCat("HTML report: ", *html, "\n"));
  return kExitOk;
}

}  // namespace

absl::StatusOr<CandidateArg> ParseCandidateArg(const std::string& value, size_t index) {
  const std::string param = absl::StrCat("candidates[", index, "]");
  CandidateArg out;
  const size_t eq = value.find('=');
  out.candidate.name = value.substr(0, eq);
  if (!ValidName(out.candidate.name)) {
    return protocol::InvalidArgument(
        absl::StrCat("--candidate '", value, "': the name '", out.candidate.name,
                     "' must be 1..64 bytes of letters, digits, '.', '_', '-'"),
        param + ".name");
  }
  if (eq == std::string::npos) return out;  // the base model
  const std::string ref = value.substr(eq + 1);
  if (ref.empty()) {
    return protocol::InvalidArgument(
        absl::StrCat("--candidate '", value, "' names nothing after '=' (NAME=job-… or NAME=DIR)"),
        param);
  }
  if (absl::StartsWith(ref, "job-") && !IsDirectory(ref)) {
    out.candidate.job = ref;
    return out;
  }
  if (absl::StartsWith(ref, "model:") && ref.size() > 6 && !IsDirectory(ref)) {
    out.candidate.model = ref.substr(6);  // another base of the node, as it is
    return out;
  }
  if (!IsDirectory(ref)) {
    return absl::NotFoundError(absl::StrCat("--candidate '", value, "': ", ref,
                                            " is not a directory (a PEFT adapter directory, or "
                                            "job-… for a fine-tune's adapter)"));
  }
  for (const char* f : kAdapterFileNames) {
    if (!IsRegularFile(absl::StrCat(ref, "/", f))) {
      return absl::NotFoundError(
          absl::StrCat("--candidate '", value, "': ", ref, " has no ", f,
                       " (a PEFT adapter directory holds "
                       "adapter_config.json and adapter_model.safetensors)"));
    }
  }
  out.adapter_dir = ref;
  return out;
}

absl::StatusOr<std::string> RenderEvaluationReport(const json& report) {
  if (!report.is_object() || report.value("schema", "") != "fjord.evaluation/1") {
    return absl::InvalidArgumentError("not an evaluation report (schema fjord.evaluation/1)");
  }
  const json* datasets = Find(report, "datasets");
  if (datasets == nullptr || !datasets->is_array()) {
    return absl::InvalidArgumentError("not an evaluation report: datasets is not an array");
  }
  std::string out =
      absl::StrCat("evaluation ", Text(report, "job"), " of model ", Text(report, "model"), "\n");
  for (size_t i = 0; i < datasets->size(); ++i) {
    FJORD_ASSIGN_OR_RETURN(std::string ds, RenderDataset((*datasets)[i], i));
    absl::StrAppend(&out, "\n", ds);
  }
  return out;
}

std::vector<OptionSpec> CompareOptions() {
  std::vector<OptionSpec> o = {
      {"model", 0, true, false, "MODEL", "the base every candidate runs on (fjord models list)"},
      {"candidate", 0, true, true, "NAME[=job-…|=DIR]",
       "a candidate (repeatable, 1..16): NAME alone is the base model, NAME=job-… a fine-tune's "
       "adapter, NAME=model:M another model of the node as it is, NAME=DIR a local PEFT adapter "
       "directory (uploaded)"},
      {"data", 0, true, true, "FILE|ID",
       "{\"prompt\",\"answer\"} lines (repeatable, 1..8): a local file (uploaded), file id or "
       "tenant path"},
      {"metric", 0, true, true, "NAME",
       "only this metric (repeatable; default all): loss, perplexity, token_accuracy, "
       "exact_match, normalized_exact_match, contains, token_f1"},
      {"max-new", 0, true, false, "N", "new tokens per reply at most (default 64)"},
      {"batch", 0, true, false, "N", "prompts per generation batch (default 8)"},
      {"samples", 0, true, false, "N", "replies shown side by side per dataset (default 5)"},
      {"bootstrap", 0, true, false, "N", "bootstrap resamples per interval (default 2000)"},
      {"seed", 0, true, false, "N", "the bootstrap's seed (default 0)"},
      {"chat-template", 0, true, false, "NAME", "how prompts are rendered (default auto)"},
      {"judge", 0, true, false, "MODEL", "a model of the node that judges every pair's replies"},
      {"priority", 0, true, false, "N", "-10..10; > 0 needs the admin role (default 0)"},
      {"idempotency-key", 0, true, false, "KEY", "repeat a create safely (default: random)"},
      {"wait", 'w', false, false, "",
       "follow the job until it ends, then show its report (exit 2 unless it succeeds)"}};
  for (const OptionSpec& s : CompareShowOptions()) o.push_back(s);
  return o;
}

std::vector<OptionSpec> CompareShowOptions() {
  return {{"out", 'o', true, false, "DIR", "keep report.json and report.html in DIR"},
          {"html", 0, true, false, "FILE.html", "copy the HTML report there"}};
}

int CmdCompare(Ctx& c) {
  if (!c.args.positionals.empty()) {
    return UsageFail(c, absl::StrCat("unexpected argument '", c.args.positionals[0], "'"));
  }
  const std::optional<std::string> model = c.args.Get("model");
  if (!model) return UsageFail(c, "missing --model");
  const std::vector<std::string> cand_args = OptionValues(c, "candidate");
  if (cand_args.empty()) {
    return UsageFail(c, "missing --candidate (e.g. --candidate base --candidate ft=job-…)");
  }
  const std::vector<std::string> data = OptionValues(c, "data");
  if (data.empty()) return UsageFail(c, "missing --data");
  const bool wait = c.args.Has("wait");
  if (!wait && (c.args.Has("out") || c.args.Has("html"))) {
    return UsageFail(c, "--out and --html need --wait (or use fjord compare show JOB_ID later)");
  }
  protocol::JobSpec spec;
  spec.type = "evaluation";
  spec.model = *model;
  std::vector<CandidateArg> cands;
  for (size_t i = 0; i < cand_args.size(); ++i) {
    absl::StatusOr<CandidateArg> a = ParseCandidateArg(cand_args[i], i);
    if (!a.ok()) return Fail(c, a.status());
    cands.push_back(*std::move(a));
  }
  spec.evaluation.metrics = OptionValues(c, "metric");
  for (auto [flag, field] :
       {std::pair<const char*, int64_t*>{"max-new", &spec.evaluation.max_new_tokens},
        {"batch", &spec.evaluation.batch_size},
        {"samples", &spec.evaluation.samples},
        {"bootstrap", &spec.evaluation.bootstrap},
        {"seed", &spec.evaluation.seed}}) {
    if (auto v = c.args.Get(flag)) {
      absl::StatusOr<int64_t> n = ParseIntOption(flag, *v);
      if (!n.ok()) return UsageFail(c, std::string(n.status().message()));
      *field = *n;
    }
  }
  if (auto v = c.args.Get("priority")) {
    absl::StatusOr<int64_t> n = ParseIntOption("priority", *v);
    if (!n.ok()) return UsageFail(c, std::string(n.status().message()));
    spec.priority = static_cast<int>(*n);
  }
  if (auto t = c.args.Get("chat-template")) spec.evaluation.chat_template = *t;
  if (auto j = c.args.Get("judge")) spec.evaluation.judge = *j;
  if (auto k = c.args.Get("idempotency-key")) spec.idempotency_key = *k;
  // Check the whole request as the daemon will (with placeholders for what
  // is still to upload) before uploading anything.
  spec.datasets = data;
  for (const CandidateArg& a : cands) {
    protocol::EvalCandidate cand = a.candidate;
    if (!a.adapter_dir.empty()) cand.adapter_config = cand.adapter_model = "local";
    spec.candidates.push_back(cand);
  }
  json body = protocol::JobSpecToJson(spec);
  if (spec.idempotency_key.empty()) body["idempotency_key"] = "check";
  if (absl::StatusOr<protocol::JobSpec> checked = protocol::JobSpecFromJson(body); !checked.ok()) {
    return Fail(c, checked.status());
  }
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  auto upload = [&](const std::string& local, std::string* id) -> absl::Status {
    FJORD_ASSIGN_OR_RETURN(protocol::FileInfo f, (*cl)->UploadFile(local));
    if (!c.json_out) c.Print(absl::StrCat("uploaded ", local, " as ", f.id, "\n"));
    *id = f.id;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < spec.datasets.size(); ++i) {
    if (!IsRegularFile(spec.datasets[i])) continue;  // a file id or tenant path
    if (absl::Status s = upload(data[i], &spec.datasets[i]); !s.ok()) return Fail(c, s);
  }
  for (size_t i = 0; i < cands.size(); ++i) {
    if (cands[i].adapter_dir.empty()) continue;
    protocol::EvalCandidate& cand = spec.candidates[i];
    for (auto [name, id] :
         {std::pair<const char*, std::string*>{kAdapterFileNames[0], &cand.adapter_config},
          {kAdapterFileNames[1], &cand.adapter_model}}) {
      if (absl::Status s = upload(absl::StrCat(cands[i].adapter_dir, "/", name), id); !s.ok())
        return Fail(c, s);
    }
  }
  absl::StatusOr<protocol::Job> job = (*cl)->CreateEvaluation(spec);
  if (!job.ok()) return Fail(c, job.status());
  if (c.json_out) {
    c.PrintJson(wait ? json{{"created", protocol::JobToJson(*job)}} : protocol::JobToJson(*job));
  } else {
    c.Print(absl::StrCat("created ", job->id, " (", protocol::JobStatusName(job->status), ")\n"));
    if (!wait) {
      c.Print(absl::StrCat("follow it: fjord jobs events ", job->id, " -f\n",
                           "its report once it succeeded: fjord compare show ", job->id, "\n"));
    }
  }
  if (!wait) return kExitOk;
  protocol::Job final_job;
  const int rc = FollowJob(c, **cl, job->id, 0, &final_job);
  if (rc != kExitOk) return rc;
  return ShowReport(c, **cl, job->id);
}

int CmdCompareShow(Ctx& c) {
  if (c.args.positionals.empty()) return UsageFail(c, "missing the job id");
  if (c.args.positionals.size() > 1) {
    return UsageFail(c, absl::StrCat("unexpected argument '", c.args.positionals[1], "'"));
  }
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  return ShowReport(c, **cl, c.args.positionals[0]);
}

}  // namespace fjord::cli
