#include "runtime/tokenizer/added_vocabulary.h"

#include <algorithm>
#include <utility>

#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/unicode.h"

namespace fjord::tokenizer::internal {
namespace {

// The code point that ends at byte `end` of valid UTF-8 `s` (end > 0).
uint32_t CodePointBefore(absl::string_view s, size_t end, size_t* start) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  *start = i;
  size_t pos = i;
  return DecodeUtf8(s, &pos);
}

// Start of the White_Space run that ends at `end` (HF: \s*$ on s[..end]).
size_t WhiteSpaceStartBefore(absl::string_view s, size_t end) {
  while (end > 0) {
    size_t start;
    if (!IsWhiteSpace(CodePointBefore(s, end, &start))) break;
    end = start;
  }
  return end;
}

// End of the White_Space run that starts at `pos` (HF: ^\s* on s[pos..]).
size_t WhiteSpaceEndAfter(absl::string_view s, size_t pos) {
  while (pos < s.size()) {
    size_t next = pos;
    if (!IsWhiteSpace(DecodeUtf8(s, &next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

void AddedVocabulary::Trie::Add(absl::string_view pattern, int32_t token_index) {
  int32_t node = 0;
  for (unsigned char c : pattern) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
    auto it = edges.find(key);
    if (it == edges.end()) {
      const int32_t child = static_cast<int32_t>(terminal.size());
      terminal.push_back(-1);
      it = edges.emplace(key, child).first;
    }
    node = it->second;
  }
  first_byte[static_cast<unsigned char>(pattern[0])] = true;
  // Two tokens with one spelling: the first added keeps it (HF's trie reports
  // the lower pattern index).
  if (terminal[node] < 0) terminal[node] = token_index;
}

bool AddedVocabulary::Trie::LongestAt(absl::string_view text, size_t pos, int32_t* token,
                                      size_t* length) const {
  int32_t node = 0;
  bool found = false;
  for (size_t j = pos; j < text.size(); ++j) {
    auto it = edges.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[j]));
    if (it == edges.end()) break;
    node = it->second;
    if (terminal[node] >= 0) {
      *token = terminal[node];
      *length = j + 1 - pos;
      found = true;
    }
  }
  return found;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer) {
  for (AddedToken& t : tokens) {
    if (!t.content.empty()) tokens_.push_back(std::move(t));
  }
  // HF builds its matchers from the special tokens first, then the others.
  std::vector<int32_t> order;
  for (int32_t i = 0; i < static_cast<int32_t>(tokens_.size()); ++i) {
    if (tokens_[i].special) order.push_back(i);
  }
  for (int32_t i = 0; i < static_cast<int32_t>(tokens_.size()); ++i) {
    if (!tokens_[i].special) order.push_back(i);
  }
  for (int32_t i : order) {
    const AddedToken& t = tokens_[i];
    if (!t.normalized) {
      raw_.Add(t.content, i);
      continue;
    }
    std::string pattern = t.content;
    if (normalizer != nullptr) normalizer->Apply(&pattern);
    if (!pattern.empty()) normalized_.Add(pattern, i);
  }
}

void AddedVocabulary::Split(absl::string_view text, bool normalized, bool skip_special,
                            std::vector<Segment>* out) const {
  if (text.empty()) return;
  const Trie& trie = normalized ? normalized_ : raw_;
  size_t cursor = 0;  // end of the last accepted match
  size_t pos = 0;     // where the search goes on
  while (pos < text.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    int32_t index = -1;
    size_t length = 0;
    if (!trie.LongestAt(text, pos, &index, &length)) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + length;
    pos = stop;  // the search goes on after the match itself, not its strip
    const AddedToken& t = tokens_[index];
    if (skip_special && t.special) continue;
    if (t.single_word) {
      size_t unused;
      const bool word_before = start > 0 && IsWordChar(CodePointBefore(text, start, &unused));
      size_t after = stop;
      const bool word_after = stop < text.size() && IsWordChar(DecodeUtf8(text, &after));
      if (word_before || word_after) continue;
    }
    if (t.lstrip) start = std::max(WhiteSpaceStartBefore(text, start), cursor);
    if (t.rstrip) stop = WhiteSpaceEndAfter(text, stop);
    // A match may start inside the space the previous one stripped on its
    // right: HF keeps both tokens (their pieces overlap; only ids matter).
    start = std::max(start, cursor);
    stop = std::max(stop, start);
    if (cursor < start) out->push_back(Segment{cursor, start, -1});
    out->push_back(Segment{start, stop, t.id});
    cursor = stop;
  }
  if (cursor < text.size()) out->push_back(Segment{cursor, text.size(), -1});
}

}  // namespace fjord::tokenizer::internal
