// `fjord quickstart`: the whole product on one machine with nothing running.
//
// Starts a local fjordd on loopback (tcp://127.0.0.1:<free port>, CURVE with
// freshly generated server and client keys, a temporary state directory and
// storage root), uploads the demo data (tools/demo: a tiny Llama-architecture
// model, tokenizer.json and instruction data), submits the demo fine-tune,
// streams its progress, downloads the PEFT adapter, prints where it is, the
// eval loss, token accuracy and held-out answer accuracy (greedy answers to
// questions about countries left out of the training data) before and after
// the fine-tune, then compares the base with the fine-tune on the held-out
// questions as an evaluation job (a table, and report.html), and stops the
// daemon.
//
// Finds its pieces (each may be overridden by an environment variable):
//   fjordd       FJORD_FJORDD, else <bin>/daemon/server/fjordd, else next to fjord, else PATH
//   fjord-train  FJORD_TRAIN,  else <bin>/lora/cli/fjord-train, else next to fjord, else PATH
//   demo         FJORD_DEMO_DIR (holding model/ and data/), else <bin>/tools/demo/out
// where <bin> is $FJORD_BIN_DIR, else the Bazel output tree fjord was built in.
#ifndef FJORD_SDK_CPP_CLI_QUICKSTART_H_
#define FJORD_SDK_CPP_CLI_QUICKSTART_H_

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"
#include "sdk/cpp/cli/settings.h"

namespace fjord::cli {

struct QuickstartOptions {
  std::string self_path;  // the fjord executable (argv[0] resolved)
  EnvGetter env;
  // Where the adapter (and, with keep, the daemon's state) goes. "": a new
  // directory under ~/.cache/fjord/quickstart.
  std::string state_dir;
  bool keep = false;         // keep the daemon's state dir and logs
  bool json = false;         // JSON lines instead of progress
  std::string job_file;      // a job.yaml instead of the built-in demo job
  double max_seconds = 900;  // give up (cancel the job) after this long
};

struct QuickstartResult {
  protocol::JobStatus job_status = protocol::JobStatus::kFailed;
  std::string job_id;
  std::string adapter_dir;  // the downloaded PEFT adapter ("" unless succeeded)
  // The comparison of the base with the fine-tune on the held-out questions
  // (an evaluation job): its downloaded report.json and report.html; "" when
  // the job has no heldout_file or did not succeed.
  std::string comparison_dir;
  std::string base_model_dir;
  // From the job's eval events: the first is the trainer's evaluation at
  // step 0, before training; the last, after the final step.
  std::optional<double> first_eval_loss, last_eval_loss;
  std::optional<double> first_eval_token_accuracy, last_eval_token_accuracy;  // 0..1
  // Greedy-answer accuracy on the job's held-out prompts (heldout_file), when
  // the trainer measured it: before training from the step-0 eval event,
  // after from the done event.
  std::optional<double> first_heldout_accuracy, last_heldout_accuracy;  // 0..1
  double seconds = 0;  // from submission to the end of the job
};

// Folds one job event into result's eval numbers (eval and done events; the
// others are ignored).
void RecordEvalEvent(const protocol::JobEvent& event, QuickstartResult* result);

// The lines that report the fine-tune's effect, each with two leading spaces:
//   "  eval loss: 3.2066 -> 0.5452 (-83.0%)"
//   "  eval token accuracy: 53.7% -> 99.4% (answer tokens predicted right)"
//   "  held-out answers: 0% -> 95% (<heldout_what>)"
// the last when either held-out number is known ("?" for the other), without
// the parenthesis when heldout_what is empty; none for what is missing.
std::vector<std::string> EvalSummaryLines(const QuickstartResult& result,
                                          const std::string& heldout_what = "");

// The demo fine-tune, in job.yaml format (what `fjord jobs create -f` reads).
const char* QuickstartJobYaml();

// Errors: FailedPrecondition naming what is missing and how to build it
// (fjordd, fjord-train, the demo); Unavailable when the daemon does not start
// (with the tail of its log); DeadlineExceeded after max_seconds; the
// client's errors otherwise. The daemon is stopped in every case.
absl::StatusOr<QuickstartResult> RunQuickstart(const QuickstartOptions& options, FILE* out,
                                               FILE* err);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_QUICKSTART_H_
