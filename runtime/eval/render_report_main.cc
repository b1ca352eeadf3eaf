// render_report: the HTML page of a comparison report (runtime/eval/report_html.h).
//
//   render_report REPORT.json OUT.html
//
// REPORT.json is what fjord-compare writes ("fjord.compare/1") or an
// evaluation report ("fjord.evaluation/1", one comparison per dataset).
// OUT.html is replaced atomically (a temp file beside it, fsynced, renamed
// over it): a reader never sees half a page, and a failure leaves any
// previous OUT.html as it was.
//
// Exit status: 0 ok; 1 bad input or a write that failed (the message names
// the file and what is wrong); 2 bad usage.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/eval/report_html.h"
#include "runtime/util/env.h"

namespace fjord::eval {
namespace {

constexpr char kUsage[] = "usage: render_report REPORT.json OUT.html\n";

int Main(int argc, char** argv) {
  if (argc == 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    std::cout << kUsage;
    return 0;
  }
  if (argc != 3) {
    std::cerr << "render_report: expected 2 arguments, got " << argc - 1 << "\n" << kUsage;
    return 2;
  }
  const std::string in = argv[1], out = argv[2];
  Env* env = Env::Default();
  absl::StatusOr<std::string> text = env->ReadFileToString(in);
  if (!text.ok()) {
    std::cerr << "render_report: " << text.status().message() << "\n";
    return 1;
  }
  nlohmann::json report;
  try {
    report = nlohmann::json::parse(*text);
  } catch (const nlohmann::json::parse_error& e) {
    std::cerr << "render_report: " << in << ": not JSON: " << e.what() << "\n";
    return 1;
  }
  absl::StatusOr<std::string> html = RenderReportHtml(report);
  if (!html.ok()) {
    std::cerr << "render_report: " << in << ": " << html.status().message() << "\n";
    return 1;
  }
  if (absl::Status s = env->WriteFileAtomic(out, *html); !s.ok()) {
    std::cerr << "render_report: cannot write " << out << ": " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace fjord::eval

int main(int argc, char** argv) { return fjord::eval::Main(argc, argv); }
