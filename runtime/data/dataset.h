// Dataset files: whole-file validation and loading of JSONL datasets.
//
// ValidateJsonl streams the file once (it never holds more than one line and
// the first DataOptions::max_errors errors), parses each line (jsonl.h),
// renders and tokenizes it (chat_template.h), and reports every bad line with
// its 1-based number. A file is valid when it has at least one example and no
// error. The daemon-side validator and `//runtime/data:validate_tool` use it;
// LoadJsonl does the same pass and also keeps the examples for training.
//
// Errors found per line (besides those of ParseRecordLine in jsonl.h):
//   - a line longer than max_line_bytes;
//   - a format different from the file's (set by its first valid line);
//   - chat messages with no chat template;
//   - more than max_length tokens after tokenization, unless truncate is set
//     (then the example is cut to max_length tokens and counted in truncated);
//   - no trained token (all assistant messages weight 0, or truncation cut all
//     trained tokens away).
// A file with no examples and no other error gets the error "no examples"
// reported on line 0.
#ifndef FJORD_RUNTIME_DATA_DATASET_H_
#define FJORD_RUNTIME_DATA_DATASET_H_

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/example.h"
#include "runtime/data/jsonl.h"
#include "runtime/data/tokenizer_view.h"

namespace fjord::data {

struct DataOptions {
  RenderOptions render;
  // Maximum tokens per example; default 0 = no limit.
  int64_t max_length = 0;
  // Default false: an example over max_length is an error. true: it is cut to
  // max_length tokens and counted in ValidationReport::truncated.
  bool truncate = false;
  // Errors kept in ValidationReport::errors (default 100); all are counted.
  int64_t max_errors = 100;
  // Longest accepted line in bytes (default 64 MiB).
  int64_t max_line_bytes = int64_t{64} << 20;
};

struct ValidationReport {
  int64_t lines = 0;              // lines read, blank ones included
  int64_t examples = 0;           // valid examples
  int64_t tokens = 0;             // tokens of valid examples, after truncation
  int64_t trained_tokens = 0;     // targets that carry loss
  int64_t truncated = 0;          // examples cut to max_length
  int64_t error_count = 0;        // all errors, including those not kept below
  std::vector<LineError> errors;  // the first DataOptions::max_errors, in line order
  std::optional<Format> format;   // the file's format, once a valid line set it
  ChatTemplate chat_template = ChatTemplate::kNone;  // the resolved template

  bool ok() const { return error_count == 0; }
  // One paragraph for people: counts, then up to the first 5 errors as
  // "line 3 (messages[1].role): unknown role ...".
  std::string Summary() const;
  // The report as a JSON object: {"valid", "lines", "examples", "tokens",
  // "trained_tokens", "truncated", "error_count", "errors": [{"line", "field",
  // "message"}], "format", "template", "summary"}.
  std::string ToJson() const;
};

// Validates the JSONL file at `path` with `tokenizer` (which must outlive the
// call). Data problems go into the report (the Status is OK); the Status is
// an error only when the file cannot be read (NotFound, DataLoss on a read
// error) or the options do not fit the tokenizer (FailedPrecondition, from
// ExampleRenderer::Create; InvalidArgument for bad limits).
absl::StatusOr<ValidationReport> ValidateJsonl(const std::string& path,
                                               const DataTokenizer& tokenizer,
                                               const DataOptions& options);
// The same over a stream; `name` is used in messages.
absl::StatusOr<ValidationReport> ValidateJsonlStream(std::istream& in, absl::string_view name,
                                                     const DataTokenizer& tokenizer,
                                                     const DataOptions& options);

struct Dataset {
  std::vector<Example> examples;  // in file order
  ValidationReport report;
};

// Validates and tokenizes the whole file. InvalidArgument (message: the path
// and ValidationReport::Summary()) when the report has any error, so no
// training starts on a partly bad file; other errors as ValidateJsonl.
absl::StatusOr<Dataset> LoadJsonl(const std::string& path, const DataTokenizer& tokenizer,
                                  const DataOptions& options);
absl::StatusOr<Dataset> LoadJsonlStream(std::istream& in, absl::string_view name,
                                        const DataTokenizer& tokenizer, const DataOptions& options);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_DATASET_H_
