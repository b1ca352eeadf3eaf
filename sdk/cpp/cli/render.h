// What the `fjord` CLI prints for people (with --json it prints the daemon's
// objects instead). The progress renderer draws the same lines as the Python
// SDK's Job.wait(progress=True) (sdk/python/fjord/_progress.py):
//
//   [##########..............] 40/100  loss 1.2100  eval 1.3000  5120 tok/s  ETA 12s
//
// redrawn in place on a terminal, or one such line per 5 % of the steps
// elsewhere; status changes, evals, checkpoints and logs get their own lines.
#ifndef FJORD_SDK_CPP_CLI_RENDER_H_
#define FJORD_SDK_CPP_CLI_RENDER_H_

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "daemon/protocol/messages.h"

namespace fjord::cli {

// "12s", "3m05s", "2h07m"; "?" for a negative or non-finite time.
std::string FormatDuration(double seconds);
// "2024-05-01 12:00:00Z" (UTC) for Unix ms; "-" for 0.
std::string FormatTimeMs(int64_t ms);
// "512 B", "1.5 KiB", "1.2 MiB", "10 GiB" (binary units, one decimal at most).
std::string FormatBytes(uint64_t bytes);
// The storage line of `files list`: "usage 1.2 MiB of 10 GiB quota",
// "usage 1.2 MiB (no quota)" for quota 0, then the files and directories
// when the daemon counts them (usage_files set): ", 42 of 100000 files", or
// ", 42 files (no limit)" for quota_files 0; and a warning when at or over
// the quota or the file limit.
std::string StorageUsageLine(uint64_t usage_bytes, uint64_t quota_bytes,
                             std::optional<uint64_t> usage_files = std::nullopt,
                             uint64_t quota_files = 0);
// A table with a header row; columns padded to their widest cell.
std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows);

// Several lines describing one job (for `jobs get`, `jobs create`).
std::string DescribeJob(const protocol::Job& job);
// One row of `jobs list`: ID STATUS MODEL STEP LOSS EVAL CREATED.
std::vector<std::string> JobRow(const protocol::Job& job);
std::vector<std::string> JobHeader();
// One line for an event (`jobs events` without -f).
std::string EventLine(const protocol::JobEvent& event);

class Progress {
 public:
  // bar: redraw one line in place (a terminal); else one line per 5 %.
  Progress(FILE* out, bool bar) : out_(out), bar_(bar) {}
  void OnEvent(const protocol::JobEvent& event);
  void Finish(const protocol::Job& job);
  // The step line without the bar, for tests.
  std::string StatusLine(const nlohmann::json& data) const;

  std::optional<double> first_eval_loss() const { return first_eval_loss_; }
  std::optional<double> last_eval_loss() const { return eval_loss_; }

 private:
  void Line(const std::string& text);
  FILE* out_;
  bool bar_;
  bool bar_open_ = false;
  std::optional<double> eval_loss_;
  std::optional<double> first_eval_loss_;
};

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_RENDER_H_
