// Regex: the patterns of tokenizer.json ("Regex" in Split pre-tokenizers and
// Replace normalizers/decoders) on PCRE2, matching as Hugging Face tokenizers
// does with Oniguruma (internal to runtime/tokenizer).
//
// tokenizer.json patterns are Oniguruma syntax (Ruby flavour). They are
// translated to PCRE2 (UTF + UCP, JIT-compiled once at load):
//   \s \S      Unicode White_Space (as Oniguruma; PCRE2's own \s adds U+180E)
//   \w \W      letters, marks, numbers, connector punctuation (Oniguruma's \w)
//   \h \H      hexadecimal digit (Oniguruma), not PCRE2's horizontal space
//   \uHHHH     code point (PCRE2: \x{HHHH})
//   ^ $        line anchors (Ruby semantics: PCRE2_MULTILINE)
//   (?m)       dot matches newline (Ruby's m is PCRE2's s)
// Inside a character class \s and \w are expanded the same way; \S and \W
// there keep PCRE2's definitions. Character class intersection (&&) and
// nested classes are refused. Unicode properties (\p{L}, \p{N}, ...) come
// from PCRE2 (10.42: Unicode 14), so characters assigned in later Unicode
// versions can classify differently from HF's Oniguruma.
//
// Thread-safety: a compiled Regex is immutable; FindAll may be called
// concurrently (each thread has its own match data and JIT stack).
#ifndef FJORD_RUNTIME_TOKENIZER_REGEX_H_
#define FJORD_RUNTIME_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"

namespace fjord::tokenizer::internal {

// [start, end) byte offsets of one match.
using Span = std::pair<size_t, size_t>;

// The PCRE2 pattern for Oniguruma pattern `pattern`; InvalidArgument for the
// constructs listed above as refused.
absl::StatusOr<std::string> TranslateOnigurumaPattern(absl::string_view pattern);

class Regex {
 public:
  // Compiles an Oniguruma-syntax pattern. InvalidArgument with PCRE2's
  // message and offset (in the translated pattern) when it does not compile.
  static absl::StatusOr<Regex> Compile(absl::string_view pattern);

  // Every match in `text` (valid UTF-8), left to right, as Oniguruma's
  // find_iter: each search starts where the previous match ended; an empty
  // match right where the previous match ended is skipped by advancing one
  // character. A match error (PCRE2 limits) ends the search early.
  void FindAll(absl::string_view text, std::vector<Span>* out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  Regex(std::string pattern, std::shared_ptr<const Code> code)
      : pattern_(std::move(pattern)), code_(std::move(code)) {}

  std::string pattern_;  // as written in tokenizer.json
  std::shared_ptr<const Code> code_;
};

// Every non-overlapping occurrence of a non-empty `literal` in `text`, left to
// right (Hugging Face's String patterns). An empty literal matches nothing.
void FindAllLiteral(absl::string_view literal, absl::string_view text, std::vector<Span>* out);

// A tokenizer.json pattern: {"String": "..."} (a literal) or {"Regex": "..."}.
class Pattern {
 public:
  // Parses the pattern object at `path`; errors name "PATH.String" or
  // "PATH.Regex".
  static absl::StatusOr<Pattern> Parse(const Json& value, absl::string_view path);
  // A literal pattern.
  static Pattern Literal(std::string literal);

  // Matches of the pattern in `text` (valid UTF-8), appended to *out.
  void FindAll(absl::string_view text, std::vector<Span>* out) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;  // null for a literal
};

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_REGEX_H_
