// Normalizers of tokenizer.json ("normalizer"), applied to each piece of text
// between added tokens, as Hugging Face tokenizers does. Internal to
// runtime/tokenizer; implementations are immutable and thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_NORMALIZER_H_
#define FJORD_RUNTIME_TOKENIZER_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"

namespace fjord::tokenizer::internal {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Normalizes *text (valid UTF-8) in place; the result is valid UTF-8.
  virtual void Apply(std::string* text) const = 0;
};

// Parses a non-null "normalizer" value at `path`: NFC, NFD, NFKC, NFKD,
// Prepend{prepend}, Replace{pattern, content}, Strip{strip_left,
// strip_right}, Sequence{normalizers}. InvalidArgument naming the field for
// any other type or a malformed field.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& value,
                                                            absl::string_view path, int depth = 0);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_NORMALIZER_H_
