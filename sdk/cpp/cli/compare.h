// `fjord compare`: an evaluation job (docs/protocol.md §5, "Evaluation
// jobs") from the command line, and its report as tables.
//
//   fjord compare --model M --candidate base --candidate ft=job-…
//       --candidate mine=./adapter-dir --data heldout.jsonl [--wait] [--out DIR]
//   fjord compare show JOB_ID [--json] [--out DIR] [--html OUT.html]
//
// Local data files and adapter directories are uploaded first (an adapter
// directory as its two files, adapter_config.json and
// adapter_model.safetensors). With --wait the job is followed like `fjord
// jobs create --wait`, then its report is downloaded (report.files /
// report.download, SHA-256 checked) and shown: per dataset, a table of the
// candidates' metrics with their 95% intervals, the pairs whose interval
// excludes zero (their verdicts), the ranks, and the judge's verdicts.
#ifndef FJORD_SDK_CPP_CLI_COMPARE_H_
#define FJORD_SDK_CPP_CLI_COMPARE_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"
#include "sdk/cpp/cli/args.h"
#include "sdk/cpp/cli/context.h"

namespace fjord::cli {

// One --candidate: "NAME" (the base model under that name), "NAME=job-…"
// (a fine-tune's adapter), "NAME=model:M" (another model of the node, as it
// is) or "NAME=DIR" (a local PEFT adapter directory).
struct CandidateArg {
  protocol::EvalCandidate candidate;  // adapter files empty until uploaded
  std::string adapter_dir;            // "" unless NAME=DIR
};

// Parses one --candidate. InvalidArgument (param candidates[index].name)
// for a name that is not 1..64 bytes of [A-Za-z0-9._-], or nothing after
// '='; NotFound naming the path for a directory that is missing or lacks
// adapter_config.json or adapter_model.safetensors.
absl::StatusOr<CandidateArg> ParseCandidateArg(const std::string& value, size_t index);

// The report (report.json, "fjord.evaluation/1") as text for people: per
// dataset a table (candidates x metrics, "mean [low, high]"), the verdicts
// of the pairs that have one, the ranks, and the judge's pairs.
// InvalidArgument for a document that is not such a report.
absl::StatusOr<std::string> RenderEvaluationReport(const nlohmann::json& report);

std::vector<OptionSpec> CompareOptions();
std::vector<OptionSpec> CompareShowOptions();
int CmdCompare(Ctx& c);
int CmdCompareShow(Ctx& c);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_COMPARE_H_
