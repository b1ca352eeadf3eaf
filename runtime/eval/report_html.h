// The HTML report of a model comparison: one self-contained page that people
// read, rendered from the JSON that fjord-compare writes (docs/comparison.md).
//
//   FJORD_ASSIGN_OR_RETURN(std::string html, eval::RenderReportHtml(report));
//
// or from the command line (runtime/eval/render_report_main.cc):
//
//   bazel build //runtime/eval:render_report
//   bazel-bin/runtime/eval/render_report report.json report.html
//
// Input, either
//   - one comparison report, `"schema": "fjord.compare/1"`, or
//   - an evaluation report, one comparison per dataset:
//       {"schema": "fjord.evaluation/1", "job": "job-…" (optional),
//        "model": "...", "datasets": [<fjord.compare/1 report>, ...]}
// Required in a comparison: `candidates`, a non-empty array of objects, each
// with a unique non-empty `name` and a `metrics` object of numbers (null for
// a value that is not finite). Everything else is optional and its section
// is left out when it is absent (or null): model, data, examples,
// chat_template, bootstrap, a candidate's adapter, intervals
// ({"<metric>": {"low": x, "high": y}}), speed and peak_rss_bytes, pairs,
// ranking, judge and samples. A field that is present must have its type.
//
// The page, per dataset: its name and path, example count and bootstrap
// settings; the pairs the statistics separate, in words; a table of
// candidates × metrics (the mean, and the candidate's 95% interval where the
// report has one); one inline SVG bar chart per metric (a bar per candidate
// at its mean, a whisker over its interval where present, an axis with round
// ticks, values labelled); the ranking per metric (shared ranks marked "=");
// the pairs table (mean difference A − B, its interval, the verdict
// highlighted: better / worse / tie, for A against B); speed and peak memory
// per candidate; the LLM judge when the report has `judge`; and the sample
// prompts, answers and every candidate's reply side by side.
//
// Properties the tests hold it to (report_html_test.cc,
// tests/interop/test_report_html.py):
//   - self-contained: inline CSS, no script, no external URL of any kind (no
//     http(s) address, font, image or `src=`), so it can be mailed, archived
//     or opened offline as is;
//   - HTML5 with <meta charset="utf-8">; every piece of report text (names,
//     paths, prompts, answers, replies: customer data) is HTML-escaped, so a
//     reply holding `<script>` shows as text;
//   - deterministic: the same report gives the same bytes (no clock, no
//     locale: numbers are formatted with the C locale);
//   - numbers to 4 significant digits, bytes as KiB/MiB/GiB, token rates with
//     one decimal.
//
// Errors: InvalidArgument naming the field (a JSON path such as
// "datasets[1].candidates[0].name") for any other schema or shape.
// Thread-safe (a pure function of its argument).
#ifndef FJORD_RUNTIME_EVAL_REPORT_HTML_H_
#define FJORD_RUNTIME_EVAL_REPORT_HTML_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"

namespace fjord::eval {

// The whole HTML page for a "fjord.compare/1" or "fjord.evaluation/1" report.
absl::StatusOr<std::string> RenderReportHtml(const nlohmann::json& report);

}  // namespace fjord::eval

#endif  // FJORD_RUNTIME_EVAL_REPORT_HTML_H_
