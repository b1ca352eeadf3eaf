// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): a
// vocabulary, ranked merges and the options Hugging Face's BPE has. Internal
// to runtime/tokenizer.
//
// Tokenize splits a word into characters (with continuing_subword_prefix on
// all but the first and end_of_word_suffix on the last), maps unknown
// characters to byte-fallback tokens <0xNN> or the unk token (fused when
// fuse_unk) exactly in HF's order, then applies merges lowest rank first,
// leftmost first among equal ranks, with a priority queue over a linked list
// of symbols (O(n log n) per word). With ignore_merges, a word that is itself
// in the vocabulary is one token. Results of words up to kMaxCachedWordBytes
// are cached.
//
// Thread-safety: immutable after Parse except the word cache, which is
// sharded and mutex-guarded; Tokenize may be called concurrently.
#ifndef FJORD_RUNTIME_TOKENIZER_BPE_H_
#define FJORD_RUNTIME_TOKENIZER_BPE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"

namespace fjord::tokenizer::internal {

// word -> ids, bounded: a full shard is cleared before the next insert.
class WordCache {
 public:
  static constexpr size_t kShards = 16;
  static constexpr size_t kEntriesPerShard = 4096;

  // Appends the cached ids of `word` to *ids and returns true, or false.
  bool Lookup(absl::string_view word, std::vector<int32_t>* ids) const;
  void Insert(absl::string_view word, const int32_t* ids, size_t n) const;

 private:
  struct Shard {
    // std::shared_mutex, not absl::Mutex: Debian's Abseil is built with
    // deadlock detection, which costs more than the lookup.
    mutable std::shared_mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map;  // guarded by mu
  };
  size_t ShardOf(absl::string_view word) const;
  mutable std::array<Shard, kShards> shards_;
};

class BpeModel {
 public:
  static constexpr size_t kMaxCachedWordBytes = 256;

  // Parses a non-null "model" value at `path`. InvalidArgument naming the
  // field: a type other than BPE, dropout > 0, vocabulary ids duplicated or
  // not 0..N-1, a merge that is not "a b" / ["a", "b"] or refers to a token
  // (or a merged token) missing from the vocabulary, an unk_token missing from
  // the vocabulary.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Parse(const Json& value, absl::string_view path);

  // Appends the ids of one pre-tokenized word (valid UTF-8) to *ids.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  // Number of tokens; ids are 0..size()-1.
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token of `id` in [0, size()).
  const std::string& IdToToken(int32_t id) const { return tokens_[static_cast<size_t>(id)]; }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;  // of the merged token
  };
  BpeModel() = default;

  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  // The initial symbols of `word` (HF merge_word before merging).
  void InitialSymbols(absl::string_view word, std::vector<int32_t>* symbols) const;
  // Merges *symbols in place.
  void MergeAll(std::vector<int32_t>* symbols) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xNN>", or -1
  WordCache cache_;
};

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_BPE_H_
