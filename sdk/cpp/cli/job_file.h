// job.yaml: a fine-tune described in a file for `fjord jobs create -f`.
//
// The file is a YAML mapping with the fields of the protocol's job.create
// body (docs/protocol.md §5: model, training_file, validation_file,
// heldout_file, hyperparameters.*, lora.*, priority, gpus, quantization,
// shard_base, max_restarts, metadata, idempotency_key, tenant), plus
// `suffix` (kept as metadata.suffix, as the Python SDK does). Command-line
// flags override the file's values. Errors name the file and the line of
// the field at fault:
//   job.yaml:7: hyperparameters.epochs must be in [1, 1000], got 0
#ifndef FJORD_SDK_CPP_CLI_JOB_FILE_H_
#define FJORD_SDK_CPP_CLI_JOB_FILE_H_

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/messages.h"

namespace fjord::cli {

struct JobDocument {
  nlohmann::json body = nlohmann::json::object();  // the job.create body as written
  std::map<std::string, int> lines;                // dotted field path -> 1-based line in `name`
  std::string name;            // the file's name for messages ("" for flags only)
  std::string base_dir = ".";  // where relative local data paths are found
};

// Parses YAML text. Plain scalars become JSON null/bool/int/number/string as
// YAML 1.2 reads them; quoted scalars stay strings. InvalidArgument naming
// the line for malformed YAML, a top level that is not a mapping, or
// anchors/aliases/tags beyond plain data.
absl::StatusOr<JobDocument> ParseJobYaml(const std::string& text, const std::string& name,
                                         const std::string& base_dir);
// Reads and parses a file (NotFound if missing).
absl::StatusOr<JobDocument> LoadJobFile(const std::string& path);

// Sets `dotted` ("hyperparameters.epochs") in doc.body, creating objects on the way;
// the field's line is forgotten (it now comes from the command line).
void SetField(JobDocument& doc, const std::string& dotted, nlohmann::json value);

// Moves `suffix` into metadata.suffix.
absl::Status NormalizeSuffix(JobDocument& doc);

// The strict parse of the body (protocol::JobSpecFromJson) with errors
// located: "NAME:LINE: message" when the param's field has a line.
absl::StatusOr<protocol::JobSpec> ValidateJob(const JobDocument& doc);

// `status` with "NAME:LINE: " put in front of its message when its param
// (protocol::ParamOf) names a field of doc with a line; the code and param kept.
absl::Status Locate(const absl::Status& status, const JobDocument& doc);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_JOB_FILE_H_
