// Added tokens (tokenizer.json "added_tokens"): found in the text before the
// normalizer and model run, as Hugging Face tokenizers' AddedVocabulary does.
// Internal to runtime/tokenizer.
//
// Two matchers: tokens with normalized=false match the raw text; those with
// normalized=true match the normalized text, spelled as the normalizer
// rewrites their content. Each finds leftmost-longest non-overlapping
// occurrences (HF uses Aho-Corasick, MatchKind::LeftmostLongest); an
// occurrence that is skipped (a special token while split_special_tokens, or a
// single_word token inside a word) is not searched again for shorter tokens.
// lstrip/rstrip widen a match over White_Space on that side; the search goes
// on from the end of the match itself, so a token may also be found inside
// the space the previous one stripped (HF keeps both).
//
// Thread-safety: immutable after construction.
#ifndef FJORD_RUNTIME_TOKENIZER_ADDED_VOCABULARY_H_
#define FJORD_RUNTIME_TOKENIZER_ADDED_VOCABULARY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace fjord::tokenizer::internal {

class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A part of a text: [start, end) and the added token found there, or -1 for
// text in between.
struct Segment {
  size_t start;
  size_t end;
  int32_t token_id;
};

class AddedVocabulary {
 public:
  // `tokens` in tokenizer.json order; `normalizer` (may be null) spells the
  // normalized=true tokens. Tokens with empty content are ignored.
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  // Splits `text` into segments covering it, using the normalized=true tokens
  // when `normalized`, else the normalized=false ones. With `skip_special`,
  // special tokens are not matched. Empty text gives no segments.
  void Split(absl::string_view text, bool normalized, bool skip_special,
             std::vector<Segment>* out) const;

  bool empty() const { return tokens_.empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie of one matcher's patterns.
  struct Trie {
    std::vector<int32_t> terminal{-1};             // node -> index into tokens_, or -1
    absl::flat_hash_map<uint64_t, int32_t> edges;  // (node << 8 | byte) -> node
    bool first_byte[256] = {};
    int first_bytes = 0;       // how many bytes start a pattern
    int only_first_byte = -1;  // that byte when there is one
    void Add(absl::string_view pattern, int32_t token_index);
    // Longest pattern starting at text[pos]: its token index and length.
    bool LongestAt(absl::string_view text, size_t pos, int32_t* token, size_t* length) const;
  };

  std::vector<AddedToken> tokens_;
  Trie raw_;
  Trie normalized_;
};

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_ADDED_VOCABULARY_H_
