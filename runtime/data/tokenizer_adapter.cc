#include "runtime/data/tokenizer_adapter.h"

#include <string>
#include <vector>

namespace fjord::data {

TokenizerAdapter::TokenizerAdapter(const tokenizer::Tokenizer& tokenizer) : tokenizer_(tokenizer) {
  // The special tokens' spellings, so EncodeOrdinary can keep Encode from
  // matching them (the tokenizer API has no switch for that yet).
  const int32_t n = tokenizer_.vocab_size();
  for (int32_t id = 0; id < n; ++id) {
    if (!tokenizer_.IsSpecial(id)) continue;
    std::optional<std::string> spelling = tokenizer_.IdToToken(id);
    if (!spelling || spelling->empty()) continue;
    first_bytes_[static_cast<unsigned char>((*spelling)[0])] = true;
    specials_.push_back(std::move(*spelling));
  }
}

std::vector<int32_t> TokenizerAdapter::EncodeOrdinary(absl::string_view text) const {
  std::vector<int32_t> ids;
  // Find the first place a special token's spelling starts.
  size_t cut = absl::string_view::npos;
  for (size_t i = 0; i < text.size() && cut == absl::string_view::npos; ++i) {
    if (!first_bytes_[static_cast<unsigned char>(text[i])]) continue;
    for (const std::string& s : specials_) {
      if (text.substr(i, s.size()) == s) {
        cut = i;
        break;
      }
    }
  }
  if (cut == absl::string_view::npos) return tokenizer_.Encode(text, /*add_special_tokens=*/false);
  // Encode the text before it, then its first byte on its own (so the spelling
  // can no longer match), then the rest the same way. Merges across these cut
  // points are lost, which only affects text that spells a special token.
  if (cut > 0) ids = tokenizer_.Encode(text.substr(0, cut), false);
  std::vector<int32_t> first = tokenizer_.Encode(text.substr(cut, 1), false);
  ids.insert(ids.end(), first.begin(), first.end());
  std::vector<int32_t> rest = EncodeOrdinary(text.substr(cut + 1));
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
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

}  // namespace fjord::data
