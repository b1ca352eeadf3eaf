// Pre-tokenizers of tokenizer.json ("pre_tokenizer"): split normalized text
// into the pieces ("words") that the model tokenizes one by one, as Hugging
// Face tokenizers does. Internal to runtime/tokenizer; implementations are
// immutable and thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_
#define FJORD_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"
#include "runtime/tokenizer/regex.h"

namespace fjord::tokenizer::internal {

// One piece of text on its way to the model.
struct Piece {
  std::string text;
  // Starts at offset 0 of the text given to Encode (Metaspace's
  // prepend_scheme "first" prepends only there).
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces *pieces by their split (and possibly rewritten) pieces; never
  // leaves an empty piece.
  virtual void Apply(std::vector<Piece>* pieces) const = 0;
};

// How a split treats the matched delimiters (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The pieces of `text` given the matches of a pattern in it: the spans to
// keep, in order, empty ones included (callers drop them). `invert` swaps
// matches and the text between them, as Split's "invert".
std::vector<Span> SplitSpans(size_t text_size, const std::vector<Span>& matches,
                             SplitBehavior behavior, bool invert);

// Parses a non-null "pre_tokenizer" value at `path`: Split, ByteLevel,
// Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence. InvalidArgument
// naming the field for any other type or a malformed field.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& value,
                                                                absl::string_view path);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_
