#include "runtime/data/tokenizer_adapter.h"

#include <string>
#include <vector>

namespace fjord::data {

TokenizerAdapter::TokenizerAdapter(const tokenizer::Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

std::vector<int32_t> TokenizerAdapter::EncodeOrdinary(absl::string_view text) const {
  tokenizer::EncodeOptions options;
  options.add_special_tokens = false;
  options.split_special_tokens = true;
  return tokenizer_.Encode(text, options);
}

std::optional<int32_t> TokenizerAdapter::SpecialTokenId(absl::string_view token) const {
  std::optional<int32_t> id = tokenizer_.TokenToId(token);
  if (!id || !tokenizer_.IsSpecial(*id)) return std::nullopt;
  return id;
}

std::optional<std::string> TokenizerAdapter::IdToToken(int32_t id) const {
  return tokenizer_.IdToToken(id);
}

std::optional<int32_t> TokenizerAdapter::bos_id() const { return tokenizer_.bos_id(); }

std::vector<int32_t> TokenizerAdapter::EncodeWithSpecialTokens(absl::string_view text) const {
  tokenizer::EncodeOptions options;
  options.add_special_tokens = false;
  options.split_special_tokens = false;
  return tokenizer_.Encode(text, options);
}

std::vector<std::string> TokenizerAdapter::SpecialTokens() const {
  std::vector<std::string> tokens;
  for (int32_t id : tokenizer_.SpecialIds()) {
    if (std::optional<std::string> token = tokenizer_.IdToToken(id)) tokens.push_back(*token);
  }
  return tokens;
}

}  // namespace fjord::data
