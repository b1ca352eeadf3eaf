// Loss curves as a standalone SVG file (`fjord jobs plot`), written by hand:
// axes with round tick values, one polyline per series, markers for sparse
// series (eval loss), a legend. Deterministic output for the same input.
#ifndef FJORD_SDK_CPP_CLI_SVG_PLOT_H_
#define FJORD_SDK_CPP_CLI_SVG_PLOT_H_

#include <string>
#include <utility>
#include <vector>

#include "daemon/protocol/messages.h"

namespace fjord::cli {

struct Series {
  std::string name;                               // legend text
  std::string color;                              // CSS colour, "#1f77b4"
  std::vector<std::pair<double, double>> points;  // (step, value), in step order
  bool markers = false;                           // draw a dot at each point
};

// The job's training loss (step events: data.step, data.loss) and eval loss
// (eval events: data.eval_loss, else data.loss), each sorted by step, a later
// value for the same step replacing an earlier one (a resumed job repeats
// steps). Non-finite values are skipped.
std::vector<Series> LossSeriesFromEvents(const std::vector<protocol::JobEvent>& events);

// Round tick values covering [lo, hi]: multiples of 1, 2 or 5 x 10^k, about
// `target` of them.
std::vector<double> NiceTicks(double lo, double hi, int target = 5);

// The SVG document (UTF-8, with an XML declaration). Series without points
// are left out of the plot but kept in the legend as "(no data)". Text is
// XML-escaped.
std::string LossCurveSvg(const std::string& title, const std::vector<Series>& series);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_SVG_PLOT_H_
