// TokenizerAdapter: fjord's tokenizer (runtime/tokenizer) seen as the
// DataTokenizer that runtime/data needs. Target //runtime/data:tokenizer_adapter.
#ifndef FJORD_RUNTIME_DATA_TOKENIZER_ADAPTER_H_
#define FJORD_RUNTIME_DATA_TOKENIZER_ADAPTER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "runtime/data/tokenizer_view.h"
#include "runtime/tokenizer/tokenizer.h"

namespace fjord::data {

// Wraps a tokenizer that must outlive the adapter. Thread-safe for concurrent
// const calls when the tokenizer's const methods are.
class TokenizerAdapter : public DataTokenizer {
 public:
  explicit TokenizerAdapter(const tokenizer::Tokenizer& tokenizer);

  // Encodes with special-token matching off (EncodeOptions::
  // split_special_tokens, as transformers' split_special_tokens=True): text
  // spelling a special token is encoded as ordinary characters, so it can
  // never become that token. Non-special added tokens still match, and the
  // model may still emit its unk token for characters it cannot encode (as HF).
  std::vector<int32_t> EncodeOrdinary(absl::string_view text) const override;
  std::optional<int32_t> SpecialTokenId(absl::string_view token) const override;
  std::optional<std::string> IdToToken(int32_t id) const override;
  std::optional<int32_t> bos_id() const override;
  // Encodes with special-token matching on (HF's default).
  std::vector<int32_t> EncodeWithSpecialTokens(absl::string_view text) const override;
  std::vector<std::string> SpecialTokens() const override;

 private:
  const tokenizer::Tokenizer& tokenizer_;
};

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_TOKENIZER_ADAPTER_H_
