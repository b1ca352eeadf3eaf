// JSONL dataset records: streaming line reading and per-line parsing into one
// of the three formats customers use.
//
//   chat:              {"messages": [{"role": "system"|"user"|"assistant",
//                                     "content": "...",
//                                     "weight": 0|1   (assistant only, optional),
//                                     "reasoning_content": "..."
//                                                     (assistant only, optional)}]}
//   prompt/completion: {"prompt": "...", "completion": "..."}
//   text:              {"text": "..."}
//
// Rules (also in docs/bad-inputs.md terms: every rule below is an error with
// the line number and the field):
//   - Each line is one JSON object. Lines that are empty or only whitespace are
//     skipped (not examples, not errors) but still counted for line numbers.
//     A trailing "\r" (CRLF files) is removed; a UTF-8 byte-order mark at the
//     start of the file is skipped.
//   - A line must be valid UTF-8 (checked before JSON parsing, so the message
//     names the byte offset) and valid JSON.
//   - Keys other than the ones above are ignored (OpenAI exports carry e.g.
//     "id"); an object with keys of two formats ("messages" and "text") is an
//     error, as is one with none.
//   - role must be one of system, user, assistant; content must be a string
//     that is not empty and not only whitespace; there must be at least one
//     assistant message; weight must be the number 0 or 1 and appears only on
//     assistant messages; reasoning_content (a model's thinking, rendered
//     only by the model's own chat template, e.g. Qwen3's <think> block) must
//     be a string and appears only on assistant messages.
// One error is reported per line: the first problem found.
#ifndef FJORD_RUNTIME_DATA_JSONL_H_
#define FJORD_RUNTIME_DATA_JSONL_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace fjord::data {

enum class Format { kChat, kPromptCompletion, kText };
// "chat", "prompt_completion", "text".
absl::string_view FormatName(Format format);

enum class Role { kSystem, kUser, kAssistant };
// "system", "user", "assistant".
absl::string_view RoleName(Role role);

struct Message {
  Role role = Role::kUser;
  std::string content;
  // -1 when the line gave no weight (assistant: trained by default), else 0/1.
  int weight = -1;
  // Assistant only: the line's "reasoning_content", if it has one.
  std::optional<std::string> reasoning_content;
};

// One parsed line. Only the fields of `format` are meaningful.
struct Record {
  Format format = Format::kText;
  std::vector<Message> messages;  // kChat
  std::string prompt;             // kPromptCompletion
  std::string completion;         // kPromptCompletion
  std::string text;               // kText
};

// A problem with one line of a dataset file. line is 1-based; 0 means the
// file as a whole (e.g. "no examples"). field names the JSON path that is
// wrong ("messages[2].content"), or is empty when the whole line is.
struct LineError {
  int64_t line = 0;
  std::string field;
  std::string message;
};

// For the validation reports of datasets and held-out prompts: appends "\n  line 3 (field):
// message" for the first 5 of `errors` and
// "\n  ... and N more" when `error_count` says there are more.
void AppendErrorLines(std::string* out, const std::vector<LineError>& errors, int64_t error_count);
// [{"line", "field", "message"}] of `errors`.
nlohmann::json ErrorsJson(const std::vector<LineError>& errors);

// One (non-blank) line as a JSON object: valid UTF-8, valid JSON, an object.
// On failure the error says which ("invalid UTF-8 at byte 5 (0xff)", "not
// valid JSON at byte 7: ...", "line is a JSON array, expected an object" and
// then `shape`, e.g. " {\"prompt\": ...}").
struct ObjectLine {
  std::optional<nlohmann::json> object;  // set on success
  LineError error;                       // meaningful when !object
};
ObjectLine ParseObjectLine(absl::string_view line, int64_t line_number,
                           absl::string_view shape = "");

// Parses one (non-blank) line into a Record. On failure returns the error with
// `line` filled in from `line_number`. Never throws, whatever the bytes.
struct ParseResult {
  std::optional<Record> record;  // set on success
  LineError error;               // meaningful when !record
};
ParseResult ParseRecordLine(absl::string_view line, int64_t line_number);

// Parses a JSON array of chat messages by the rules above (role, content,
// weight, reasoning_content; not "at least one assistant message") into
// `out`. On failure returns the first problem, its field named from `field`
// ("chosen[1].content") and `line` filled in. Never throws.
std::optional<LineError> ParseMessageArray(const nlohmann::json& messages, absl::string_view field,
                                           int64_t line, std::vector<Message>& out);

// Returns the 0-based offset of the first byte that breaks strict UTF-8
// (overlong forms, surrogates and code points above U+10FFFF are invalid), or
// nullopt when `text` is valid UTF-8.
std::optional<size_t> FindInvalidUtf8(absl::string_view text);

// True when `text` is empty or consists only of whitespace (Unicode White_Space
// as Python's str.isspace sees it, for valid UTF-8).
bool IsBlank(absl::string_view text);

// `text` without leading and trailing whitespace, exactly as Python's
// str.strip() (and so Jinja's `trim` filter used by the Llama 3 chat template)
// removes it.
absl::string_view StripWhitespace(absl::string_view text);

// Reads a stream line by line in fixed-size chunks, so a huge file (or a huge
// file without newlines) never sits in memory whole: lines longer than
// `max_line_bytes` are reported as too long and their bytes discarded.
// Not thread-safe.
class LineReader {
 public:
  // `in` must outlive the reader.
  LineReader(std::istream& in, int64_t max_line_bytes);

  enum class Result { kLine, kTooLong, kEnd, kReadError };
  // Advances to the next line. kLine: `line` holds it (without "\n" or a
  // trailing "\r"; the BOM is stripped on line 1). kTooLong: the line had more
  // than max_line_bytes bytes and was skipped. kEnd: no more lines. kReadError:
  // the stream failed. line_number() is the 1-based number of the line just
  // returned.
  Result Next(std::string& line);
  int64_t line_number() const { return line_number_; }

 private:
  bool Fill();  // reads the next chunk into buffer_; false at end or error

  std::istream& in_;
  int64_t max_line_bytes_;
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
  bool read_error_ = false;
  int64_t line_number_ = 0;
};

// Reads a JSONL stream line by line (LineReader): `on_line(line, n)` for
// each line that is not blank (n: its 1-based number), `on_too_long(error)`
// for each longer than max_line_bytes ("line is longer than N bytes").
// Returns the number of lines read, blank ones included, or DataLossError
// "NAME: read error after line N" when the stream fails.
absl::StatusOr<int64_t> ForEachJsonlLine(
    std::istream& in, absl::string_view name, int64_t max_line_bytes,
    const std::function<void(LineError error)>& on_too_long,
    const std::function<void(const std::string& line, int64_t n)>& on_line);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_JSONL_H_
