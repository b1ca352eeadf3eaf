#include "runtime/eval/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "runtime/eval/report_model.h"
#include "runtime/util/status_macros.h"

namespace fjord::eval {
namespace {

using nlohmann::json;

using report_model::Candidate;
using report_model::Dataset;
using report_model::Interval;
using report_model::Judge;
using report_model::JudgePair;
using report_model::kNaN;
using report_model::Pair;
using report_model::RankEntry;
using report_model::ReadReport;
using report_model::Report;
using report_model::Sample;

// ---- Text -------------------------------------------------------------------

std::string Esc(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Printf(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
}

// 4 significant digits ("245.4", "0.075", "1.5e-05"); whole numbers of 5+
// digits in full rather than in exponent form. "—" for NaN.
std::string Num(double x) {
  if (std::isnan(x)) return "—";
  if (std::isinf(x)) return x > 0 ? "∞" : "−∞";
  if (x == 0) return "0";  // never "-0"
  if (std::fabs(x) >= 1e4 && std::fabs(x) < 1e12) return Printf("%.0f", x);
  return Printf("%.4g", x);
}

// A difference: always signed ("+0.95", "−0.2", "0").
std::string Signed(double x) {
  if (std::isnan(x) || x == 0) return Num(x);
  return x > 0 ? absl::StrCat("+", Num(x)) : absl::StrCat("−", Num(-x));
}

std::string Neg(double x) { return x < 0 ? absl::StrCat("−", Num(-x)) : Num(x); }

std::string IntervalText(const Interval& i) {
  return absl::StrCat("[", Neg(i.low), ", ", Neg(i.high), "]");
}

std::string Bytes(double b) {
  if (std::isnan(b)) return "—";
  constexpr double kKiB = 1024.0, kMiB = kKiB * 1024, kGiB = kMiB * 1024;
  if (b >= kGiB) return Printf("%.2f GiB", b / kGiB);
  if (b >= kMiB) return Printf("%.1f MiB", b / kMiB);
  if (b >= kKiB) return Printf("%.1f KiB", b / kKiB);
  return Printf("%.0f B", b);
}

std::string Rate(double r) { return std::isnan(r) ? "—" : Printf("%.1f", r); }

std::string Count(double n) { return std::isnan(n) ? "—" : Printf("%.0f", n); }

std::string Percent(double f) { return std::isnan(f) ? "—" : Printf("%.1f%%", 100 * f); }

// The first max_chars characters (UTF-8 code points) of s, with "…" when cut.
std::string Truncate(const std::string& s, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (chars == max_chars) return s.substr(0, i) + "…";
    ++chars;
  }
  return s;
}

size_t Utf8Length(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

bool LowerIsBetter(const std::string& metric) { return metric == "loss" || metric == "perplexity"; }

std::string MetricLabel(const std::string& metric) {
  static const std::map<std::string, std::string> kLabels = {
      {"loss", "Answer loss"},
      {"perplexity", "Perplexity"},
      {"token_accuracy", "Token accuracy"},
      {"exact_match", "Exact match"},
      {"normalized_exact_match", "Normalized exact match"},
      {"contains", "Contains answer"},
      {"token_f1", "Token F1"}};
  auto it = kLabels.find(metric);
  return it == kLabels.end() ? metric : it->second;
}

// "Answer loss" over its key "loss" in small monospace.
std::string MetricHead(const std::string& metric) {
  return absl::StrCat(Esc(MetricLabel(metric)), "<span class=\"key\">", Esc(metric), "</span>");
}

std::string VerdictBadge(const std::string& verdict) {
  if (verdict.empty()) return "—";
  const char* cls = verdict == "better"  ? "v-better"
                    : verdict == "worse" ? "v-worse"
                    : verdict == "tie"   ? "v-tie"
                                         : "v-other";
  return absl::StrCat("<span class=\"badge ", cls, "\">", Esc(verdict), "</span>");
}

// A colour per candidate (by position), the same in every chart of a dataset.
const char* Colour(size_t i) {
  static const char* const kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                         "#b07aa1", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"};
  return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

// ---- The bar chart ------------------------------------------------------------

// Round ticks covering [lo, hi]: a step of 1, 2 or 5 × 10^k, about 5 of them.
struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  int decimals = 1;
};

Axis NiceAxis(double lo, double hi) {
  if (!(hi > lo)) {  // one value (or none): a unit range around it
    hi = lo + (lo == 0 ? 1 : std::fabs(lo));
  }
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  Axis a;
  a.step = step;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  a.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return a;
}

std::string TickLabel(double v, int decimals) {
  if (decimals > 4) {  // tiny steps: "2e-06" rather than "0.000002"
    return std::fabs(v) < std::pow(10.0, -decimals - 3) ? "0" : Neg(v);
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  std::string s = buf;
  if (s.find_first_not_of("-0.") == std::string::npos) return "0";
  if (s[0] == '-') return absl::StrCat("−", s.substr(1));
  return s;
}

std::string Px(double x) { return Printf("%.1f", x); }

// Horizontal bars, one row per candidate: the label, a bar from 0 to the
// mean, a whisker over the interval where the candidate has one, the value.
std::string BarChart(const Dataset& d, const std::string& metric) {
  constexpr double kWidth = 520, kRow = 30, kBar = 16, kTop = 8, kAxis = 30, kValueRoom = 64;
  size_t longest = 4;
  for (const Candidate& c : d.candidates) longest = std::max(longest, Utf8Length(c.name));
  const double label_w = std::clamp(12.0 + 6.6 * std::min<size_t>(longest, 22), 60.0, 170.0);
  const double x0 = label_w, x1 = kWidth - kValueRoom;
  const double height = kTop + kRow * static_cast<double>(d.candidates.size()) + kAxis;

  double lo = 0, hi = 0;
  for (const Candidate& c : d.candidates) {
    auto m = c.metrics.find(metric);
    if (m != c.metrics.end() && std::isfinite(m->second)) {
      lo = std::min(lo, m->second);
      hi = std::max(hi, m->second);
    }
    auto i = c.intervals.find(metric);
    if (i != c.intervals.end() && i->second.present() && std::isfinite(i->second.low) &&
        std::isfinite(i->second.high)) {
      lo = std::min(lo, i->second.low);
      hi = std::max(hi, i->second.high);
    }
  }
  const Axis axis = NiceAxis(lo, hi);
  auto x = [&](double v) {
    v = std::clamp(v, axis.lo, axis.hi);
    return x0 + (v - axis.lo) / (axis.hi - axis.lo) * (x1 - x0);
  };
  const double plot_bottom = kTop + kRow * static_cast<double>(d.candidates.size());

  std::string s = absl::StrCat("<svg class=\"bars\" viewBox=\"0 0 ", Px(kWidth), " ", Px(height),
                               "\" role=\"img\" aria-label=\"", Esc(MetricLabel(metric)),
                               " per candidate\">\n");
  // Grid and ticks.
  const int ticks = static_cast<int>(std::lround((axis.hi - axis.lo) / axis.step));
  for (int t = 0; t <= ticks; ++t) {
    const double v = axis.lo + t * axis.step;
    const std::string tx = Px(x(v));
    absl::StrAppend(&s, "<line class=\"grid\" x1=\"", tx, "\" y1=\"", Px(kTop - 4), "\" x2=\"", tx,
                    "\" y2=\"", Px(plot_bottom), "\"/>");
    absl::StrAppend(&s, "<text class=\"tick\" x=\"", tx, "\" y=\"", Px(plot_bottom + 16),
                    "\" text-anchor=\"middle\">", TickLabel(v, axis.decimals), "</text>\n");
  }
  absl::StrAppend(&s, "<line class=\"axis\" x1=\"", Px(x0), "\" y1=\"", Px(plot_bottom), "\" x2=\"",
                  Px(x1), "\" y2=\"", Px(plot_bottom), "\"/>\n");
  const std::string zx = Px(x(0));
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    const Candidate& c = d.candidates[i];
    const double cy = kTop + kRow * static_cast<double>(i) + kRow / 2;
    absl::StrAppend(&s, "<g class=\"row\"><title>", Esc(c.name), "</title>");
    absl::StrAppend(&s, "<text class=\"name\" x=\"", Px(x0 - 8), "\" y=\"", Px(cy + 4),
                    "\" text-anchor=\"end\">", Esc(Truncate(c.name, 22)), "</text>");
    auto m = c.metrics.find(metric);
    const double mean = m == c.metrics.end() ? kNaN : m->second;
    double label_x = x(0);
    if (std::isfinite(mean)) {
      const double a = std::min(x(0), x(mean)), b = std::max(x(0), x(mean));
      absl::StrAppend(&s, "<rect class=\"bar\" x=\"", Px(a), "\" y=\"", Px(cy - kBar / 2),
                      "\" width=\"", Px(std::max(b - a, 1.0)), "\" height=\"", Px(kBar),
                      "\" rx=\"2\" fill=\"", Colour(i), "\"/>");
      label_x = std::max(label_x, x(mean));
    }
    auto in = c.intervals.find(metric);
    if (in != c.intervals.end() && in->second.present()) {
      const std::string l = Px(x(in->second.low)), h = Px(x(in->second.high));
      absl::StrAppend(&s, "<g class=\"whisker\"><line x1=\"", l, "\" y1=\"", Px(cy), "\" x2=\"", h,
                      "\" y2=\"", Px(cy), "\"/><line x1=\"", l, "\" y1=\"", Px(cy - 6), "\" x2=\"",
                      l, "\" y2=\"", Px(cy + 6), "\"/><line x1=\"", h, "\" y1=\"", Px(cy - 6),
                      "\" x2=\"", h, "\" y2=\"", Px(cy + 6), "\"/></g>");
      label_x = std::max(label_x, x(in->second.high));
    }
    absl::StrAppend(&s, "<text class=\"value\" x=\"", Px(label_x + 6), "\" y=\"", Px(cy + 4), "\">",
                    Neg(mean), "</text></g>\n");
  }
  absl::StrAppend(&s, "<line class=\"zero\" x1=\"", zx, "\" y1=\"", Px(kTop - 4), "\" x2=\"", zx,
                  "\" y2=\"", Px(plot_bottom), "\"/>\n</svg>");
  return s;
}

// ---- The page ------------------------------------------------------------------

constexpr char kStyle[] = R"css(
:root{--fg:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f4f6f9;--card:#fff;--head:#f0f3f7;
--accent:#2f6fde;--good:#126b3c;--good-bg:#dff3e6;--bad:#a8231a;--bad-bg:#fde7e5;
--tie:#52606d;--tie-bg:#eceff3}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
header.top{background:var(--card);border-bottom:1px solid var(--line);padding:26px 0 22px;margin-bottom:26px}
.brand{font-size:12px;font-weight:700;letter-spacing:.12em;text-transform:uppercase;color:var(--accent)}
h1{font-size:26px;line-height:1.25;margin:4px 0 10px;font-weight:650}
h2{font-size:20px;line-height:1.3;margin:0 0 6px;font-weight:650;overflow-wrap:anywhere}
h3{font-size:15px;margin:28px 0 10px;font-weight:650}
h3 small{font-weight:400;color:var(--muted);font-size:12.5px;margin-left:6px}
.meta{display:flex;flex-wrap:wrap;gap:4px 22px;margin:0;padding:0;list-style:none;color:var(--muted);font-size:13px}
.meta li{overflow-wrap:anywhere}
.meta b{color:var(--fg);font-weight:600}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:12.5px}
nav.toc{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 20px;margin-bottom:24px}
nav.toc ol{margin:6px 0 0;padding-left:22px}
nav.toc a{color:var(--accent);text-decoration:none}
section.dataset{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:24px 26px 28px;
margin-bottom:28px;box-shadow:0 1px 2px rgba(16,24,40,.05)}
.findings{margin:16px 0 0;padding:12px 16px;border-radius:8px;background:#f7f9fc;border:1px solid var(--line)}
.findings ul{margin:4px 0 0;padding-left:20px}
.findings li{margin:2px 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:var(--head);font-weight:600;color:#3e4c59;vertical-align:bottom;border-bottom:1px solid #d9dee5}
tbody tr:nth-child(even){background:#f9fafb}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
thead th.num{white-space:nowrap}
td.name{font-weight:600;overflow-wrap:anywhere;min-width:120px}
.key{display:block;font:11px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--muted);font-weight:400}
.ci{display:block;color:var(--muted);font-size:11.5px}
.best{font-weight:700}
.dot{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:7px;vertical-align:baseline}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;line-height:1.6}
.v-better{background:var(--good-bg);color:var(--good)}
.v-worse{background:var(--bad-bg);color:var(--bad)}
.v-tie{background:var(--tie-bg);color:var(--tie)}
.v-other{background:#fff4d6;color:#7a5b00}
.note{color:var(--muted);font-size:12.5px;margin:8px 0 0}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:14px}
figure.chart{margin:0;border:1px solid var(--line);border-radius:10px;padding:12px 14px 8px}
figure.chart figcaption{font-weight:600;font-size:13.5px;display:flex;justify-content:space-between;gap:8px}
figure.chart figcaption .key{display:inline;margin-left:8px}
figure.chart figcaption .dir{font-weight:400;color:var(--muted);font-size:12px;white-space:nowrap}
svg.bars{display:block;width:100%;height:auto;margin-top:4px}
svg.bars text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:11.5px;fill:#3e4c59}
svg.bars text.name{font-size:12px;fill:var(--fg)}
svg.bars text.value{font-weight:600;fill:var(--fg)}
svg.bars text.tick{fill:var(--muted);font-size:10.5px}
svg.bars .grid{stroke:#eef1f4;stroke-width:1}
svg.bars .axis{stroke:#c5ccd5;stroke-width:1}
svg.bars .zero{stroke:#9aa5b1;stroke-width:1}
svg.bars .whisker line{stroke:#1f2933;stroke-width:1.5}
.ranks td{vertical-align:middle}
.chip{display:inline-block;margin:2px 8px 2px 0;padding:2px 9px 2px 3px;border:1px solid var(--line);border-radius:999px;background:#fff;white-space:nowrap}
.chip .r{display:inline-block;min-width:22px;padding:0 5px;margin-right:6px;border-radius:999px;background:var(--head);text-align:center;font-weight:700;font-size:12px}
.chip.first .r{background:var(--accent);color:#fff}
.chip .m{color:var(--muted);margin-left:6px;font-size:12px}
.sample{border:1px solid var(--line);border-radius:10px;padding:14px 16px 16px;margin-bottom:14px}
.sample h4{margin:0 0 8px;font-size:13px;color:var(--muted);font-weight:600}
.qa{display:grid;grid-template-columns:3fr 2fr;gap:12px}
.who{font-size:12.5px;font-weight:600;margin:0 0 4px;overflow-wrap:anywhere}
.replies{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:12px;margin-top:12px}
.label{font-size:11px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);font-weight:700;margin:0 0 4px;overflow-wrap:anywhere}
pre.text{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;
font:12.5px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
background:#f8fafc;border:1px solid var(--line);border-radius:6px;padding:8px 10px}
pre.answer{background:#f3f8f4;border-color:#d5e8da}
.empty{color:var(--muted);font-style:italic}
footer{color:var(--muted);font-size:12px;padding:4px 24px 36px}
@media print{body{background:#fff}section.dataset{box-shadow:none;break-inside:avoid-page}}
)css";

std::string ConfidenceText(const Dataset& d) {
  const double c = std::isnan(d.confidence) ? 0.95 : d.confidence;
  return Printf("%.0f%%", 100 * c);
}

std::string DatasetTitle(const Dataset& d, size_t index) {
  if (!d.name.empty()) return d.name;
  if (!d.data.empty()) {
    const size_t slash = d.data.find_last_of('/');
    return slash == std::string::npos ? d.data : d.data.substr(slash + 1);
  }
  return absl::StrCat("Dataset ", index + 1);
}

void Findings(const Dataset& d, std::string& s) {
  if (d.pairs.empty()) return;
  std::vector<const Pair*> decided;
  for (const Pair& p : d.pairs) {
    if (p.verdict == "better" || p.verdict == "worse") decided.push_back(&p);
  }
  absl::StrAppend(&s, "<div class=\"findings\"><b>What the statistics separate</b>");
  if (decided.empty()) {
    absl::StrAppend(&s, "<p class=\"note\">No pair of candidates differs on any metric at ",
                    ConfidenceText(d), " confidence: every interval contains zero.</p></div>\n");
    return;
  }
  absl::StrAppend(&s, "<ul>");
  for (const Pair* p : decided) {
    absl::StrAppend(&s, "<li><b>", Esc(p->a), "</b> is ", VerdictBadge(p->verdict), " than <b>",
                    Esc(p->b), "</b> on ", Esc(MetricLabel(p->metric)), " <code>", Esc(p->metric),
                    "</code>: mean difference ", Signed(p->mean_difference));
    if (p->interval.present()) {
      absl::StrAppend(&s, ", ", ConfidenceText(d), " interval ", IntervalText(p->interval));
    }
    absl::StrAppend(&s, "</li>");
  }
  absl::StrAppend(&s, "</ul></div>\n");
}

void MetricsTable(const Dataset& d, std::string& s) {
  bool any_interval = false;
  for (const Candidate& c : d.candidates) any_interval |= !c.intervals.empty();
  absl::StrAppend(&s, "<h3>Scores<small>mean over examples",
                  any_interval ? absl::StrCat("; ", ConfidenceText(d), " interval below") : "",
                  "</small></h3>\n<div class=\"scroll\"><table class=\"metrics\"><thead><tr>"
                  "<th>Candidate</th>");
  for (const std::string& m : d.metrics) {
    absl::StrAppend(&s, "<th class=\"num\">", MetricHead(m), "</th>");
  }
  absl::StrAppend(&s, "</tr></thead><tbody>\n");
  // The best mean per metric in bold, where the candidates' means differ.
  std::map<std::string, double> best;
  std::set<std::string> differ;
  for (const std::string& m : d.metrics) {
    for (const Candidate& c : d.candidates) {
      auto it = c.metrics.find(m);
      if (it == c.metrics.end() || !std::isfinite(it->second)) continue;
      auto [b, fresh] = best.emplace(m, it->second);
      if (fresh) continue;
      if (it->second != b->second) differ.insert(m);
      b->second =
          LowerIsBetter(m) ? std::min(b->second, it->second) : std::max(b->second, it->second);
    }
  }
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    const Candidate& c = d.candidates[i];
    absl::StrAppend(&s, "<tr><td class=\"name\"><span class=\"dot\" style=\"background:", Colour(i),
                    "\"></span>", Esc(c.name));
    if (!c.adapter.empty()) {
      absl::StrAppend(&s, "<span class=\"key\">", Esc(c.adapter), "</span>");
    }
    absl::StrAppend(&s, "</td>");
    for (const std::string& m : d.metrics) {
      auto it = c.metrics.find(m);
      const double v = it == c.metrics.end() ? kNaN : it->second;
      const bool is_best = differ.count(m) > 0 && v == best[m];
      absl::StrAppend(&s, "<td class=\"num\">", is_best ? "<span class=\"best\">" : "", Neg(v),
                      is_best ? "</span>" : "");
      auto in = c.intervals.find(m);
      if (in != c.intervals.end() && in->second.present()) {
        absl::StrAppend(&s, "<span class=\"ci\">", IntervalText(in->second), "</span>");
      }
      absl::StrAppend(&s, "</td>");
    }
    absl::StrAppend(&s, "</tr>\n");
  }
  absl::StrAppend(&s, "</tbody></table></div>\n");
  if (d.candidates.size() > 1) {
    absl::StrAppend(&s,
                    "<p class=\"note\">Bold: the best mean per metric (lower is better for "
                    "loss and perplexity, higher for the others).</p>\n");
  }
}

void Charts(const Dataset& d, std::string& s) {
  absl::StrAppend(&s, "<h3>Charts<small>bar: mean", "; whisker: the candidate's ",
                  ConfidenceText(d),
                  " interval, where the report has one</small></h3>\n<div class=\"charts\">\n");
  for (const std::string& m : d.metrics) {
    absl::StrAppend(&s, "<figure class=\"chart\"><figcaption><span>", MetricHead(m),
                    "</span><span class=\"dir\">",
                    LowerIsBetter(m) ? "lower is better" : "higher is better",
                    "</span></figcaption>\n", BarChart(d, m), "</figure>\n");
  }
  absl::StrAppend(&s, "</div>\n");
}

void Ranking(const Dataset& d, std::string& s) {
  if (d.ranking.empty()) return;
  absl::StrAppend(&s,
                  "<h3>Ranking<small>1 = best; candidates nothing separates share a rank "
                  "(marked =)</small></h3>\n<div class=\"scroll\"><table class=\"ranks\"><thead>"
                  "<tr><th>Metric</th><th>Candidates, best first</th></tr></thead><tbody>\n");
  for (const auto& [metric, rows] : d.ranking) {
    std::map<int64_t, int> shared;
    for (const RankEntry& e : rows) ++shared[e.rank];
    absl::StrAppend(&s, "<tr><td>", MetricHead(metric), "</td><td>");
    for (const RankEntry& e : rows) {
      const bool tie = shared[e.rank] > 1;
      absl::StrAppend(&s, "<span class=\"chip", e.rank == 1 ? " first" : "",
                      "\"><span class=\"r\">", tie ? "=" : "", e.rank, "</span>", Esc(e.name));
      if (!std::isnan(e.mean)) absl::StrAppend(&s, "<span class=\"m\">", Neg(e.mean), "</span>");
      absl::StrAppend(&s, "</span>");
    }
    absl::StrAppend(&s, "</td></tr>\n");
  }
  absl::StrAppend(&s, "</tbody></table></div>\n");
}

void Pairs(const Dataset& d, std::string& s) {
  if (!d.has_pairs) return;
  absl::StrAppend(&s, "<h3>Pairs<small>mean over examples of A − B, its paired bootstrap ",
                  ConfidenceText(d),
                  " interval, and a verdict for A against B only where the interval excludes "
                  "zero</small></h3>\n");
  if (d.pairs.empty()) {
    absl::StrAppend(&s, "<p class=\"note\">No pairs: one candidate only.</p>\n");
    return;
  }
  absl::StrAppend(&s,
                  "<div class=\"scroll\"><table class=\"pairs\"><thead><tr><th>Metric</th>"
                  "<th>A</th><th>B</th><th class=\"num\">Mean difference</th>"
                  "<th class=\"num\">Interval</th><th>Verdict</th></tr></thead><tbody>\n");
  for (const Pair& p : d.pairs) {
    absl::StrAppend(&s, "<tr><td>", MetricHead(p.metric), "</td><td class=\"name\">", Esc(p.a),
                    "</td><td class=\"name\">", Esc(p.b), "</td><td class=\"num\">",
                    Signed(p.mean_difference), "</td><td class=\"num\">",
                    p.interval.present() ? IntervalText(p.interval) : "—", "</td><td>",
                    VerdictBadge(p.verdict), "</td></tr>\n");
  }
  absl::StrAppend(&s, "</tbody></table></div>\n");
}

void Speed(const Dataset& d, std::string& s) {
  bool any = false;
  for (const Candidate& c : d.candidates) any |= c.has_speed || !std::isnan(c.peak_rss_bytes);
  if (!any) return;
  absl::StrAppend(
      &s,
      "<h3>Speed and memory<small>prefill: prompt tokens per second of the "
      "prompts' forward; decode: tokens per second of the steps after it; peak RSS "
      "is the process's after the candidate ran (it only grows), peak GPU memory "
      "the candidate's own</small></h3>\n<div class=\"scroll\"><table class=\"speed\">"
      "<thead><tr><th>Candidate</th><th class=\"num\">Scoring (tokens/s)</th>"
      "<th class=\"num\">Generation (tokens/s)</th>"
      "<th class=\"num\">Prefill (tokens/s)</th><th class=\"num\">Decode (tokens/s)</th>"
      "<th class=\"num\">Generated tokens</th><th class=\"num\">Peak RSS</th>"
      "<th class=\"num\">Peak GPU memory</th></tr></thead><tbody>\n");
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    const Candidate& c = d.candidates[i];
    absl::StrAppend(&s, "<tr><td class=\"name\"><span class=\"dot\" style=\"background:", Colour(i),
                    "\"></span>", Esc(c.name), "</td><td class=\"num\">", Rate(c.loss_tokens_per_s),
                    "</td><td class=\"num\">", Rate(c.generated_tokens_per_s),
                    "</td><td class=\"num\">", Rate(c.prefill_tokens_per_s),
                    "</td><td class=\"num\">", Rate(c.decode_tokens_per_s),
                    "</td><td class=\"num\">", Count(c.generated_tokens), "</td><td class=\"num\">",
                    Bytes(c.peak_rss_bytes), "</td><td class=\"num\">",
                    Bytes(c.peak_gpu_memory_bytes), "</td></tr>\n");
  }
  absl::StrAppend(&s, "</tbody></table></div>\n");
}

void JudgeSection(const Dataset& d, std::string& s) {
  if (!d.has_judge) return;
  const Judge& j = d.judge;
  absl::StrAppend(&s, "<h3>LLM judge<small>pairwise preferences of a judge model</small></h3>\n");
  absl::StrAppend(&s, "<ul class=\"meta\">");
  if (!j.model.empty()) absl::StrAppend(&s, "<li>judge <b>", Esc(j.model), "</b></li>");
  absl::StrAppend(&s, "</ul>\n");
  if (!j.prompt.empty()) {
    absl::StrAppend(&s,
                    "<p class=\"label\" style=\"margin-top:10px\">Judge prompt</p><pre "
                    "class=\"text\">",
                    Esc(j.prompt), "</pre>\n");
  }
  if (j.pairs.empty()) return;
  absl::StrAppend(
      &s,
      "<div class=\"scroll\" style=\"margin-top:12px\"><table class=\"judge\"><thead><tr>"
      "<th>A</th><th>B</th><th class=\"num\">Examples</th><th class=\"num\">A wins</th>"
      "<th class=\"num\">B wins</th><th class=\"num\">Ties</th><th class=\"num\">Agreement</th>"
      "<th class=\"num\">A's win rate</th><th class=\"num\">Interval</th><th>Verdict</th>"
      "</tr></thead><tbody>\n");
  for (const JudgePair& p : j.pairs) {
    absl::StrAppend(&s, "<tr><td class=\"name\">", Esc(p.a), "</td><td class=\"name\">", Esc(p.b),
                    "</td><td class=\"num\">", Count(p.examples), "</td><td class=\"num\">",
                    Count(p.wins_a), "</td><td class=\"num\">", Count(p.wins_b),
                    "</td><td class=\"num\">", Count(p.ties), "</td><td class=\"num\">",
                    Percent(p.agreement), "</td><td class=\"num\">", Num(p.win_rate_a),
                    "</td><td class=\"num\">",
                    p.win_rate_a_interval.present() ? IntervalText(p.win_rate_a_interval) : "—",
                    "</td><td>", VerdictBadge(p.verdict), "</td></tr>\n");
  }
  absl::StrAppend(&s,
                  "</tbody></table></div>\n<p class=\"note\">Verdicts are for A against "
                  "B.</p>\n");
}

std::string TextBlock(const std::string& text, const char* extra_class) {
  if (text.empty()) return "<pre class=\"text empty\">(empty)</pre>";
  return absl::StrCat("<pre class=\"text", extra_class, "\">", Esc(text), "</pre>");
}

void Samples(const Dataset& d, std::string& s) {
  if (d.samples.empty()) return;
  absl::StrAppend(&s, "<h3>Samples<small>", d.samples.size(),
                  d.samples.size() == 1 ? " example" : " examples",
                  ", every candidate's reply side by side</small></h3>\n");
  for (size_t i = 0; i < d.samples.size(); ++i) {
    const Sample& x = d.samples[i];
    absl::StrAppend(&s, "<div class=\"sample\"><h4>Example ", i + 1);
    if (x.line > 0) absl::StrAppend(&s, " · line ", x.line);
    absl::StrAppend(&s, "</h4><div class=\"qa\"><div><p class=\"label\">Prompt</p>",
                    TextBlock(x.prompt, ""), "</div>");
    if (x.has_answer) {
      absl::StrAppend(&s, "<div><p class=\"label\">Expected answer</p>",
                      TextBlock(x.answer, " answer"), "</div>");
    }
    absl::StrAppend(&s, "</div><div class=\"replies\">");
    std::set<std::string> shown;
    for (size_t c = 0; c < d.candidates.size(); ++c) {
      const std::string& name = d.candidates[c].name;
      shown.insert(name);
      auto it = x.replies.find(name);
      absl::StrAppend(&s,
                      "<div><p class=\"who\"><span class=\"dot\" style=\"background:", Colour(c),
                      "\"></span>", Esc(name), "</p>",
                      it == x.replies.end() ? "<pre class=\"text empty\">(no reply)</pre>"
                                            : TextBlock(it->second, ""),
                      "</div>");
    }
    for (const auto& [name, reply] : x.replies) {  // replies of names not among the candidates
      if (shown.count(name) > 0) continue;
      absl::StrAppend(&s, "<div><p class=\"who\">", Esc(name), "</p>", TextBlock(reply, ""),
                      "</div>");
    }
    absl::StrAppend(&s, "</div></div>\n");
  }
}

void DatasetSection(const Report& r, const Dataset& d, size_t index, std::string& s) {
  absl::StrAppend(&s, "<section class=\"dataset\" id=\"dataset-", index + 1, "\">\n<h2>",
                  r.evaluation ? "Dataset: " : "", Esc(DatasetTitle(d, index)),
                  "</h2>\n<ul class=\"meta\">");
  if (!d.data.empty()) absl::StrAppend(&s, "<li>data <b class=\"mono\">", Esc(d.data), "</b></li>");
  if (d.examples >= 0) absl::StrAppend(&s, "<li><b>", d.examples, "</b> examples</li>");
  absl::StrAppend(&s, "<li><b>", d.candidates.size(), "</b> candidate",
                  d.candidates.size() == 1 ? "" : "s", "</li>");
  if (!d.model.empty() && d.model != r.model) {
    absl::StrAppend(&s, "<li>model <b class=\"mono\">", Esc(d.model), "</b></li>");
  }
  if (!d.chat_template.empty()) {
    absl::StrAppend(&s, "<li>chat template <b>", Esc(d.chat_template), "</b></li>");
  }
  if (!std::isnan(d.bootstrap_iterations)) {
    absl::StrAppend(&s, "<li>bootstrap <b>", Count(d.bootstrap_iterations), "</b> resamples, ",
                    ConfidenceText(d));
    if (!std::isnan(d.seed)) absl::StrAppend(&s, ", seed ", Count(d.seed));
    absl::StrAppend(&s, "</li>");
  }
  absl::StrAppend(&s, "</ul>\n");
  Findings(d, s);
  MetricsTable(d, s);
  Charts(d, s);
  Ranking(d, s);
  Pairs(d, s);
  Speed(d, s);
  JudgeSection(d, s);
  Samples(d, s);
  absl::StrAppend(&s, "</section>\n");
}

std::string Page(const Report& r) {
  const std::string title = r.evaluation ? "Evaluation report" : "Model comparison";
  std::string s = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta name=\"generator\" content=\"fjord render_report\">\n<title>",
      title, r.model.empty() ? "" : absl::StrCat(" · ", Esc(r.model)), "</title>\n<style>", kStyle,
      "</style>\n</head>\n<body>\n<header class=\"top\"><div class=\"wrap\">"
      "<div class=\"brand\">fjord</div><h1>",
      title, "</h1><ul class=\"meta\">");
  if (!r.job.empty()) absl::StrAppend(&s, "<li>job <b class=\"mono\">", Esc(r.job), "</b></li>");
  if (!r.model.empty()) {
    absl::StrAppend(&s, "<li>model <b class=\"mono\">", Esc(r.model), "</b></li>");
  }
  if (r.evaluation) {
    absl::StrAppend(&s, "<li><b>", r.datasets.size(), "</b> dataset",
                    r.datasets.size() == 1 ? "" : "s", "</li>");
  }
  absl::StrAppend(&s, "</ul></div></header>\n<main class=\"wrap\">\n");
  if (r.evaluation && r.datasets.size() > 1) {
    absl::StrAppend(&s, "<nav class=\"toc\"><b>Datasets</b><ol>");
    for (size_t i = 0; i < r.datasets.size(); ++i) {
      absl::StrAppend(&s, "<li><a href=\"#dataset-", i + 1, "\">",
                      Esc(DatasetTitle(r.datasets[i], i)), "</a></li>");
    }
    absl::StrAppend(&s, "</ol></nav>\n");
  }
  for (size_t i = 0; i < r.datasets.size(); ++i) DatasetSection(r, r.datasets[i], i, s);
  absl::StrAppend(&s, "</main>\n<footer class=\"wrap\">Rendered by fjord's render_report from a ",
                  r.evaluation ? "fjord.evaluation/1" : "fjord.compare/1",
                  " report. Self-contained: no scripts, no external resources.</footer>\n"
                  "</body>\n</html>\n");
  return s;
}

}  // namespace

absl::StatusOr<std::string> RenderReportHtml(const nlohmann::json& report) {
  FJORD_ASSIGN_OR_RETURN(Report r, ReadReport(report));
  return Page(r);
}

}  // namespace fjord::eval
