// Preference data: JSONL files of (prompt, chosen, rejected) pairs for
// preference tuning (DPO, ORPO, SimPO: runtime/train/preference_loss.h).
//
// Line shapes (one per file; keys other than these are ignored):
//   TRL, explicit prompt:
//     {"prompt": "text" | [messages], "chosen": "text" | [messages],
//      "rejected": "text" | [messages]}
//     ("messages" is accepted in place of "prompt": the conversation so far)
//   TRL, implicit prompt (chosen and rejected are whole conversations):
//     {"chosen": [messages], "rejected": [messages]}: the prompt is their
//     common leading messages, as TRL's extract_prompt takes it
//   OpenAI (preference fine-tuning):
//     {"input": {"messages": [messages]}, "preferred_output": [messages],
//      "non_preferred_output": [messages]}
// Messages follow jsonl.h's rules (role, non-blank content, ...). A response
// given as messages must end with an assistant message; a response given as
// a string is one assistant message.
//
// Rendering (the way TRL's DPOTrainer tokenizes conversational data, with
// the chat template SFT data uses, chat_template.h):
//   prompt_ids = the prompt with the start of an assistant turn
//                (ExampleRenderer::PromptIds: apply_chat_template(prompt,
//                add_generation_prompt=True))
//   chosen_all = the prompt plus the chosen messages, rendered whole
//                (ExampleRenderer::Render: apply_chat_template(prompt +
//                chosen)); likewise rejected_all
//   the prompt is the longest prefix of prompt_ids shared by both
//   (TRL's common_prefix_length), the responses everything after it: the
//   assistant turn's tokens through its end-of-turn token and whatever the
//   template writes after it (ChatML's "\n").
// A string prompt with a chat template is one user message (as SFT's
// prompt/completion format; TRL would tokenize such a pair as plain text).
// With template none (base models) prompt, chosen and rejected must be
// strings: [BOS] prompt, then response + EOS (TRL's non-conversational
// tokenization, EOS appended).
//
// Length (TRL's default truncation_mode "keep_start"): each sequence, prompt
// + response, longer than max_length is cut to its first max_length tokens
// (the end of the response goes), counted in `truncated`; a pair whose prompt
// alone has max_length tokens or more is an error (TRL drops it silently).
// With truncate off, any sequence over max_length is an error.
//
// Errors per line (file:line, field): a line that is not one JSON object;
// missing "chosen" / "rejected" (or "preferred_output" /
// "non_preferred_output"); no prompt; an empty or blank response; a response
// whose last message is not the assistant's; identical chosen and rejected
// (after tokenization); a prompt too long for max_length; a format different
// from the file's first line. A file with no pairs and no other error gets
// "no examples" on line 0.
#ifndef FJORD_RUNTIME_DATA_PREFERENCE_H_
#define FJORD_RUNTIME_DATA_PREFERENCE_H_

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
#include "runtime/data/packing.h"
#include "runtime/data/tokenizer_view.h"

namespace fjord::data {

enum class PreferenceFormat { kTrl, kOpenAI };
// "trl", "openai".
absl::string_view PreferenceFormatName(PreferenceFormat format);

// One tokenized pair. prompt + chosen and prompt + rejected are the two
// sequences; every response token carries the preference loss.
struct PreferencePair {
  std::vector<int32_t> prompt;
  std::vector<int32_t> chosen;
  std::vector<int32_t> rejected;
  int64_t line = 0;  // 1-based source line (0: not from a file)
};

struct PreferenceOptions {
  RenderOptions render;  // train_on_inputs is ignored: responses alone are scored
  // Tokens per sequence (prompt + response); default 0: no limit.
  int64_t max_length = 0;
  // Default true: a sequence over max_length is cut (keep_start); false: an error.
  bool truncate = true;
  int64_t max_errors = 100;                    // errors kept in the report
  int64_t max_line_bytes = int64_t{64} << 20;  // longest accepted line
};

struct PreferenceReport {
  int64_t lines = 0;      // lines read, blank ones included
  int64_t pairs = 0;      // valid pairs
  int64_t tokens = 0;     // tokens of both sequences of valid pairs, after truncation
  int64_t truncated = 0;  // pairs with a sequence cut to max_length
  int64_t error_count = 0;
  std::vector<LineError> errors;  // the first max_errors, in line order
  std::optional<PreferenceFormat> format;
  ChatTemplate chat_template = ChatTemplate::kNone;

  bool ok() const { return error_count == 0; }
  std::string Summary() const;
  // {"valid", "lines", "examples" (pairs), "tokens", "truncated",
  // "error_count", "errors": [{"line", "field", "message"}], "format",
  // "template", "kind": "preference", "summary"}.
  std::string ToJson() const;
};

// Validates a preference file. Data problems go into the report; the Status
// is an error only when the file cannot be read (NotFound, DataLoss) or the
// options do not fit the tokenizer (as ValidateJsonl, dataset.h).
absl::StatusOr<PreferenceReport> ValidatePreferenceJsonl(const std::string& path,
                                                         const DataTokenizer& tokenizer,
                                                         const PreferenceOptions& options);

struct PreferenceDataset {
  std::vector<PreferencePair> pairs;  // in file order
  PreferenceReport report;
};

// Validates and tokenizes the whole file: InvalidArgument ("PATH: " and the
// report's summary) when any line is bad; other errors as Validate.
absl::StatusOr<PreferenceDataset> LoadPreferenceJsonl(const std::string& path,
                                                      const DataTokenizer& tokenizer,
                                                      const PreferenceOptions& options);
absl::StatusOr<PreferenceDataset> LoadPreferenceJsonlStream(std::istream& in,
                                                            absl::string_view name,
                                                            const DataTokenizer& tokenizer,
                                                            const PreferenceOptions& options);

// ---- Batches of pairs ---------------------------------------------------------
// A pair travels through DataLoader / PackBatch (loader.h, packing.h) as one
// Example, so the order, packing and exact resume are SFT's: input_ids are
// prompt + chosen followed by prompt + rejected, targets each sequence's
// next tokens (kIgnoreIndex on the last token of each). A row must hold
// 2 x max_length tokens for every pair to fit.
Example PairAsExample(const PreferencePair& pair);

// A sequence in a packed batch: `length` tokens from flat index `offset`
// (row * T + column); its first `prompt_length` tokens are the prompt.
struct SequenceSpan {
  int64_t offset = 0;
  int64_t length = 0;
  int64_t prompt_length = 0;
  // Response tokens: targets at [offset + prompt_length - 1, offset + length - 1).
  int64_t response_length() const { return length - prompt_length; }
};
struct PairSpans {
  int64_t pair = 0;  // index into the pairs
  SequenceSpan chosen, rejected;
};

// Turns a batch packed from PairAsExample examples back into pairs of
// sequences: every placed pair becomes two segments (chosen, then rejected)
// with positions from 0, so attention never crosses from one to the other
// (packing.h's block-diagonal rows). Returns the spans in placement order.
// `pairs` are the loader's examples' pairs, by index.
std::vector<PairSpans> SplitPairs(const std::vector<PreferencePair>& pairs, PackedBatch& batch);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_PREFERENCE_H_
