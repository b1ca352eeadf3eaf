// Held-out prompts: the questions the trainer asks the model, greedily,
// before and after the fine-tune (eval.heldout in fjord-train's config,
// heldout_file in a job), to measure how many of its answers are right.
//
//   {"prompt": "What is the capital of Peru?", "answer": "Lima"}
//
// A reply counts as right when it contains the answer. The rules, each an
// error with the line number and the field (as for datasets, jsonl.h):
//   - each line is one JSON object; lines that are empty or only whitespace
//     are skipped but counted; a trailing "\r" and a UTF-8 byte-order mark
//     at the start of the file are removed;
//   - a line must be valid UTF-8 and valid JSON;
//   - "prompt" and "answer" must be strings that are not empty and not only
//     whitespace (an empty answer is in every reply); other keys are ignored;
//   - a file with no question and no other error gets "no questions in the
//     file" on line 0.
// Plain C++ (no LibTorch, no tokenizer): the validator links it.
#ifndef FJORD_RUNTIME_DATA_HELDOUT_H_
#define FJORD_RUNTIME_DATA_HELDOUT_H_

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/jsonl.h"

namespace fjord::data {

struct HeldoutQuestion {
  std::string prompt;
  std::string answer;
  int64_t line = 0;  // 1-based, in the file
};

struct HeldoutReport {
  int64_t lines = 0;              // lines read, blank ones included
  int64_t questions = 0;          // valid questions
  int64_t error_count = 0;        // all errors, including those not kept below
  std::vector<LineError> errors;  // the first max_errors, in line order

  bool ok() const { return error_count == 0; }
  // One paragraph for people: "valid: 20 questions", or the counts and up to
  // the first 5 errors as "line 3 (answer): ...".
  std::string Summary() const;
  // {"valid", "lines", "questions", "error_count", "errors": [{"line",
  // "field", "message"}], "summary"}.
  std::string ToJson() const;
};

struct HeldoutSet {
  std::vector<HeldoutQuestion> questions;  // in file order
  HeldoutReport report;
};

// Checks every line of the file at `path`, keeping the first `max_errors`
// errors (all are counted). Data problems go into the report (the Status is
// OK); the Status is NotFound when the file cannot be opened, DataLoss on a
// read error, InvalidArgument for max_errors < 0.
absl::StatusOr<HeldoutReport> ValidateHeldoutJsonl(const std::string& path,
                                                   int64_t max_errors = 100);
// The same over a stream; `name` is used in messages.
absl::StatusOr<HeldoutReport> ValidateHeldoutStream(std::istream& in, absl::string_view name,
                                                    int64_t max_errors = 100);

// Reads the whole file. InvalidArgument ("PATH: " and HeldoutReport::Summary())
// when the report has any error, so no question is asked of a file with a
// bad line; NotFound / DataLoss as above.
absl::StatusOr<HeldoutSet> LoadHeldoutJsonl(const std::string& path);
absl::StatusOr<HeldoutSet> LoadHeldoutStream(std::istream& in, absl::string_view name);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_HELDOUT_H_
