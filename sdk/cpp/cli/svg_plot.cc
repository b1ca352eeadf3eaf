#include "sdk/cpp/cli/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fjord::cli {
namespace {

constexpr double kWidth = 720, kHeight = 420;
constexpr double kLeft = 70, kRight = 24, kTop = 48, kBottom = 56;

std::string Escape(const std::string& s) {
  std::string out;
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
        out += "&apos;";
        break;
      default:
        // Control characters are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

std::string Num(double v) { return absl::StrFormat("%.1f", v); }

std::string TickLabel(double v, double step) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) return absl::StrFormat("%.2g", v);
  int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  return absl::StrFormat("%.*f", decimals, v);
}

}  // namespace

std::vector<Series> LossSeriesFromEvents(const std::vector<protocol::JobEvent>& events) {
  std::map<int64_t, double> loss, eval;
  for (const protocol::JobEvent& e : events) {
    if (!e.data.is_object() || !e.data.contains("step") || !e.data["step"].is_number()) continue;
    const int64_t step = e.data["step"].get<int64_t>();
    auto value = [&](const char* key) -> std::optional<double> {
      auto it = e.data.find(key);
      if (it == e.data.end() || !it->is_number()) return std::nullopt;
      const double v = it->get<double>();
      return std::isfinite(v) ? std::optional<double>(v) : std::nullopt;
    };
    if (e.type == "step") {
      if (auto v = value("loss")) loss[step] = *v;
    } else if (e.type == "eval") {
      if (auto v = value("eval_loss"))
        eval[step] = *v;
      else if (auto w = value("loss"))
        eval[step] = *w;
    }
  }
  Series train{"training loss", "#1f77b4", {}, false};
  for (const auto& [s, v] : loss) train.points.emplace_back(static_cast<double>(s), v);
  train.markers = train.points.size() <= 3;
  Series ev{"eval loss", "#ff7f0e", {}, true};
  for (const auto& [s, v] : eval) ev.points.emplace_back(static_cast<double>(s), v);
  return {train, ev};
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
    if (ticks.size() > 100) break;
  }
  return ticks;
}

std::string LossCurveSvg(const std::string& title, const std::vector<Series>& series) {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  }
  const bool empty = !std::isfinite(xmin);
  if (empty) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  xmin = std::min(xmin, 0.0);
  if (xmax <= xmin) xmax = xmin + 1;
  if (ymax - ymin < 1e-12) ymin -= 0.5, ymax += 0.5;
  const double pad = (ymax - ymin) * 0.05;
  ymin -= pad, ymax += pad;
  const std::vector<double> xt = NiceTicks(xmin, xmax, 6), yt = NiceTicks(ymin, ymax, 5);
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  xmax = std::max(xmax, xt.empty() ? xmax : xt.back());
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto X = [&](double x) { return kLeft + (x - xmin) / (xmax - xmin) * pw; };
  auto Y = [&](double y) { return kTop + (ymax - y) / (ymax - ymin) * ph; };

  std::string o = absl::StrCat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", Num(kWidth), "\" height=\"",
      Num(kHeight), "\" viewBox=\"0 0 ", Num(kWidth), " ", Num(kHeight),
      "\" font-family=\"sans-serif\" font-size=\"12\">\n", "<title>", Escape(title), "</title>\n",
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", "<text x=\"", Num(kWidth / 2),
      "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", Escape(title), "</text>\n");
  // Grid and ticks.
  absl::StrAppend(&o, "<g class=\"grid\" stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
  for (double t : yt) {
    if (t < ymin || t > ymax) continue;
    absl::StrAppend(&o, "<line x1=\"", Num(kLeft), "\" y1=\"", Num(Y(t)), "\" x2=\"",
                    Num(kLeft + pw), "\" y2=\"", Num(Y(t)), "\"/>\n");
  }
  for (double t : xt) {
    absl::StrAppend(&o, "<line x1=\"", Num(X(t)), "\" y1=\"", Num(kTop), "\" x2=\"", Num(X(t)),
                    "\" y2=\"", Num(kTop + ph), "\"/>\n");
  }
  absl::StrAppend(&o, "</g>\n<g class=\"axes\" stroke=\"#333\" stroke-width=\"1\" fill=\"none\">\n",
                  "<line x1=\"", Num(kLeft), "\" y1=\"", Num(kTop + ph), "\" x2=\"",
                  Num(kLeft + pw), "\" y2=\"", Num(kTop + ph), "\"/>\n", "<line x1=\"", Num(kLeft),
                  "\" y1=\"", Num(kTop), "\" x2=\"", Num(kLeft), "\" y2=\"", Num(kTop + ph),
                  "\"/>\n</g>\n<g class=\"ticks\" fill=\"#333\">\n");
  for (double t : xt) {
    absl::StrAppend(&o, "<text x=\"", Num(X(t)), "\" y=\"", Num(kTop + ph + 18),
                    "\" text-anchor=\"middle\">", TickLabel(t, xstep), "</text>\n");
  }
  for (double t : yt) {
    if (t < ymin || t > ymax) continue;
    absl::StrAppend(&o, "<text x=\"", Num(kLeft - 8), "\" y=\"", Num(Y(t) + 4),
                    "\" text-anchor=\"end\">", TickLabel(t, ystep), "</text>\n");
  }
  absl::StrAppend(&o, "</g>\n<text x=\"", Num(kLeft + pw / 2), "\" y=\"", Num(kHeight - 14),
                  "\" text-anchor=\"middle\">step</text>\n", "<text x=\"18\" y=\"",
                  Num(kTop + ph / 2), "\" text-anchor=\"middle\" transform=\"rotate(-90 18 ",
                  Num(kTop + ph / 2), ")\">loss</text>\n");
  // Series.
  for (const Series& s : series) {
    if (s.points.empty()) continue;
    std::string pts;
    for (const auto& [x, y] : s.points)
      absl::StrAppend(&pts, pts.empty() ? "" : " ", Num(X(x)), ",", Num(Y(y)));
    absl::StrAppend(&o, "<polyline class=\"series\" data-name=\"", Escape(s.name),
                    "\" fill=\"none\" stroke=\"", Escape(s.color),
                    "\" stroke-width=\"2\" points=\"", pts, "\"/>\n");
    if (s.markers) {
      absl::StrAppend(&o, "<g fill=\"", Escape(s.color), "\">\n");
      for (const auto& [x, y] : s.points) {
        absl::StrAppend(&o, "<circle cx=\"", Num(X(x)), "\" cy=\"", Num(Y(y)), "\" r=\"3.5\"/>\n");
      }
      absl::StrAppend(&o, "</g>\n");
    }
  }
  // Legend, top right.
  double ly = kTop + 14;
  absl::StrAppend(&o, "<g class=\"legend\">\n");
  for (const Series& s : series) {
    const double lx = kLeft + pw - 150;
    absl::StrAppend(&o, "<line x1=\"", Num(lx), "\" y1=\"", Num(ly - 4), "\" x2=\"", Num(lx + 22),
                    "\" y2=\"", Num(ly - 4), "\" stroke=\"", Escape(s.color),
                    "\" stroke-width=\"2\"/>\n", "<text x=\"", Num(lx + 28), "\" y=\"", Num(ly),
                    "\">", Escape(s.name), s.points.empty() ? " (no data)" : "", "</text>\n");
    ly += 18;
  }
  absl::StrAppend(&o, "</g>\n</svg>\n");
  return o;
}

}  // namespace fjord::cli
