// DataTokenizer: the narrow view of a tokenizer that runtime/data needs.
//
// runtime/data does not link the tokenizer library itself: it works through
// this interface, so the dataset validator stays plain C++ and its logic can be
// unit-tested with a tiny fake. The adapter for fjord's real tokenizer
// (runtime/tokenizer/tokenizer.h) is in tokenizer_adapter.h, target
// //runtime/data:tokenizer_adapter.
#ifndef FJORD_RUNTIME_DATA_TOKENIZER_VIEW_H_
#define FJORD_RUNTIME_DATA_TOKENIZER_VIEW_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace fjord::data {

class DataTokenizer {
 public:
  virtual ~DataTokenizer() = default;

  // Token ids of `text` encoded as ordinary text: no BOS/EOS added, and the
  // spelling of a special token inside `text` (e.g. "<|eot_id|>") is NOT
  // matched as that special token but encoded like any other characters. This
  // is what keeps dataset content from injecting control tokens.
  // Thread-safety: implementations must allow concurrent const calls.
  virtual std::vector<int32_t> EncodeOrdinary(absl::string_view text) const = 0;

  // Id of the special (added, control) token spelled exactly `token`, or
  // nullopt when the tokenizer has no such special token.
  virtual std::optional<int32_t> SpecialTokenId(absl::string_view token) const = 0;

  // The spelling of token `id` ("<|begin_of_text|>"), or nullopt when out of
  // range.
  virtual std::optional<std::string> IdToToken(int32_t id) const = 0;

  // The tokenizer's beginning-of-sequence token, if it defines one.
  virtual std::optional<int32_t> bos_id() const = 0;

  // Token ids of `text` as transformers' tokenizer(text,
  // add_special_tokens=False) gives them: special tokens spelled in the text
  // ARE matched (with their lstrip/rstrip flags), no BOS/EOS is added. Only
  // for text whose special-token spellings are trusted (a model chat
  // template's own text). Default: EncodeOrdinary (no special matching).
  virtual std::vector<int32_t> EncodeWithSpecialTokens(absl::string_view text) const {
    return EncodeOrdinary(text);
  }

  // The spelling of every special token, in no particular order. Default:
  // none.
  virtual std::vector<std::string> SpecialTokens() const { return {}; }
};

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_TOKENIZER_VIEW_H_
