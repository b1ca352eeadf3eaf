// Decoders of tokenizer.json ("decoder"): token strings back to text, as
// Hugging Face tokenizers' decode_chain does (each decoder rewrites the list
// of token strings; the result is their concatenation). Internal to
// runtime/tokenizer; implementations are immutable and thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_DECODER_H_
#define FJORD_RUNTIME_TOKENIZER_DECODER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"

namespace fjord::tokenizer::internal {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites *tokens in place (valid UTF-8 in, valid UTF-8 out).
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Parses a non-null "decoder" value at `path`: ByteLevel, Metaspace,
// Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence. InvalidArgument
// naming the field for any other type or a malformed field.
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& value, absl::string_view path,
                                                      int depth = 0);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_DECODER_H_
