// Pre-tokenizers of tokenizer.json ("pre_tokenizer"): split normalized text
// into the pieces ("words") that the model tokenizes one by one, as Hugging
// Face tokenizers does. Internal to runtime/tokenizer; implementations are
// immutable and thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_
#define FJORD_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"
#include "runtime/tokenizer/regex.h"

namespace fjord::tokenizer::internal {

// The pieces of text on their way to the model, in one buffer (so splitting
// allocates nothing per piece once the buffers have grown).
class Pieces {
 public:
  struct Ref {
    size_t begin;
    size_t end;
    // Starts at offset 0 of the text given to Encode (Metaspace's
    // prepend_scheme "first" prepends only there).
    bool at_start;
  };

  void clear() {
    text_.clear();
    refs_.clear();
  }
  // Frees the buffers if they grew beyond `max_bytes` (thread-local reuse
  // should not pin the memory of one huge text).
  void Trim(size_t max_bytes) {
    if (text_.capacity() > max_bytes) {
      std::string().swap(text_);
      std::vector<Ref>().swap(refs_);
    }
  }
  size_t size() const { return refs_.size(); }
  absl::string_view operator[](size_t i) const {
    return absl::string_view(text_).substr(refs_[i].begin, refs_[i].end - refs_[i].begin);
  }
  bool at_start(size_t i) const { return refs_[i].at_start; }
  // Appends a piece (empty ones are dropped).
  void Add(absl::string_view text, bool at_start) {
    if (text.empty()) return;
    const size_t begin = text_.size();
    text_.append(text.data(), text.size());
    refs_.push_back(Ref{begin, text_.size(), at_start});
  }
  // Appends a piece written by `write(std::string* buffer)` at the end of the
  // buffer (empty ones are dropped).
  template <typename Write>
  void AddWith(bool at_start, Write write) {
    const size_t begin = text_.size();
    write(&text_);
    if (text_.size() > begin) refs_.push_back(Ref{begin, text_.size(), at_start});
  }

 private:
  std::string text_;
  std::vector<Ref> refs_;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Appends to *out the pieces that `in` splits (and possibly rewrites)
  // into; never an empty piece. `out` is empty on entry and is not `in`.
  virtual void Apply(const Pieces& in, Pieces* out) const = 0;
};

// How a split treats the matched delimiters (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The pieces of `text` given the matches of a pattern in it: *spans becomes
// the spans to keep, in order, empty ones included (callers drop them).
// `invert` swaps matches and the text between them, as Split's "invert".
void SplitSpans(size_t text_size, const std::vector<Span>& matches, SplitBehavior behavior,
                bool invert, std::vector<Span>* spans);

// Parses a non-null "pre_tokenizer" value at `path`: Split, ByteLevel,
// Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence. InvalidArgument
// naming the field for any other type or a malformed field.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& value,
                                                                absl::string_view path,
                                                                int depth = 0);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_
