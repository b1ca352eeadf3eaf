// fjord-compare: evaluates a base model and LoRA adapters side by side on
// the same prompt/answer set, with paired statistics (issue 19's comparison
// tool, run locally; runtime/eval has its scoring and statistics).
//
//   fjord-compare --model DIR [--no-base] [--adapter NAME=DIR ...] [--base NAME=DIR ...]
//       --data FILE.jsonl [--data ...]
//       [--metric NAME ...] [--chat-template auto] [--max-new 64] [--batch 8] [--samples 5]
//       [--bootstrap 2000] [--seed 0] [--judge DIR] [--device auto] [--out report.json]
//       [--html report.html]
//
// The work is lora/compare.h's (RunEvaluation), which an evaluation job of
// fjordd runs too. Data: JSONL of {"prompt": ..., "answer": ...} (the
// held-out format; runtime/data/heldout.h), checked whole first: a bad line
// is an error naming the file, the line and the field, and nothing runs.
// Candidates: the base (unless --no-base) and each adapter, loaded one after
// another onto the one base in this process (the base is read once), and
// each --base, another model folder run as it is (its losses compared only
// with candidates whose tokenizer.json is the same).
// Writes the JSON report (docs/comparison.md has its fields: "fjord.compare/1"
// for one --data, "fjord.evaluation/1" holding one per dataset for several)
// to --out, or to stdout, a table per dataset to stderr, and with --html the
// report as a self-contained page.
//
// Exit status: 0 ok; 1 an error (the message names the file, line, field);
// 2 bad usage.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "lora/compare.h"
#include "runtime/util/env.h"

namespace fjord::lora {
namespace {

using nlohmann::ordered_json;

constexpr char kUsage[] =
    "usage: fjord-compare --model DIR [--no-base] [--adapter NAME=DIR ...] [--base NAME=DIR ...]\n"
    "           --data FILE.jsonl "
    "[--data ...]\n"
    "           [--metric NAME ...] [--chat-template auto] [--max-new 64] [--batch 8]\n"
    "           [--samples 5] [--bootstrap 2000] [--seed 0] [--judge DIR] [--device auto]\n"
    "           [--out report.json] [--html report.html]\n";

int Main(int argc, char** argv) {
  EvaluationConfig c;
  std::string out, html;
  bool base = true;
  std::vector<EvaluationConfig::Candidate> adapters;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-base") {
      base = false;
      continue;
    }
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::cerr << "fjord-compare: bad argument '" << a << "'\n" << kUsage;
      return 2;
    }
    const std::string v = argv[++i];
    bool ok = true;
    int64_t seed = 0;
    if (a == "--model") {
      c.model = v;
    } else if (a == "--data") {
      c.datasets.push_back({"", v});
    } else if (a == "--metric") {
      c.metrics.push_back(v);
      ok = false;
      for (const std::string& m : ComparisonMetrics()) ok = ok || m == v;
    } else if (a == "--out") {
      out = v;
    } else if (a == "--html") {
      html = v;
    } else if (a == "--chat-template") {
      c.chat_template = v;
    } else if (a == "--judge") {
      c.judge = v;
    } else if (a == "--device") {
      c.device = v;
      ok = v == "auto" || v == "cpu" || v == "cuda";
    } else if (a == "--base") {
      std::pair<std::string, std::string> nd = absl::StrSplit(v, absl::MaxSplits('=', 1));
      ok = !nd.first.empty() && !nd.second.empty() && nd.first != "base";
      adapters.push_back({nd.first, "", "", "", nd.second, ""});
    } else if (a == "--adapter") {
      std::pair<std::string, std::string> nd = absl::StrSplit(v, absl::MaxSplits('=', 1));
      ok = !nd.first.empty() && !nd.second.empty() && nd.first != "base";
      adapters.push_back({nd.first, nd.second, "", "", "", ""});
    } else if (a == "--max-new") {
      ok = absl::SimpleAtoi(v, &c.max_new_tokens) && c.max_new_tokens >= 1;
    } else if (a == "--batch") {
      ok = absl::SimpleAtoi(v, &c.batch_size) && c.batch_size > 0;
    } else if (a == "--samples") {
      ok = absl::SimpleAtoi(v, &c.samples) && c.samples >= 0;
    } else if (a == "--bootstrap") {
      ok = absl::SimpleAtoi(v, &c.bootstrap) && c.bootstrap > 0;
    } else if (a == "--seed") {
      ok = absl::SimpleAtoi(v, &seed) && seed >= 0;
      c.seed = static_cast<uint64_t>(seed);
    } else {
      std::cerr << "fjord-compare: unknown flag '" << a << "'\n" << kUsage;
      return 2;
    }
    if (!ok) {
      std::cerr << "fjord-compare: bad value for " << a << ": '" << v << "'\n" << kUsage;
      return 2;
    }
  }
  if (base) c.candidates.push_back({"base", "", "", "", "", ""});
  c.candidates.insert(c.candidates.end(), adapters.begin(), adapters.end());
  if (c.model.empty() || c.datasets.empty() || c.candidates.empty()) {
    std::cerr << "fjord-compare: --model, --data and at least one candidate are required\n"
              << kUsage;
    return 2;
  }
  // Every dataset line by line before a model is read.
  const nlohmann::json valid = ValidateEvaluation(c);
  if (!valid["valid"].get<bool>()) {
    std::cerr << "fjord-compare: invalid input:\n" << valid.dump(2) << "\n";
    return 1;
  }
  absl::StatusOr<std::vector<ordered_json>> reports = RunEvaluation(c, {});
  if (!reports.ok()) {
    std::cerr << "fjord-compare: " << reports.status() << "\n";
    return 1;
  }
  for (const ordered_json& r : *reports) std::cerr << ComparisonTable(r);
  const ordered_json report =
      reports->size() == 1 ? reports->front() : EvaluationReport(c, *reports);
  const std::string text = report.dump(2) + "\n";
  if (out.empty()) {
    std::cout << text;
  } else if (absl::Status s = Env::Default()->WriteFileAtomic(out, text); !s.ok()) {
    std::cerr << "fjord-compare: cannot write " << out << ": " << s.message() << "\n";
    return 1;
  }
  if (!html.empty()) {
    absl::StatusOr<std::string> page = RenderReport(report);
    absl::Status s = page.ok() ? Env::Default()->WriteFileAtomic(html, *page) : page.status();
    if (!s.ok()) {
      std::cerr << "fjord-compare: cannot write " << html << ": " << s.message() << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace fjord::lora

int main(int argc, char** argv) { return fjord::lora::Main(argc, argv); }
