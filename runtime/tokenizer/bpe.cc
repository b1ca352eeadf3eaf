#include "runtime/tokenizer/bpe.h"

#include <algorithm>
#include <functional>
#include <mutex>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {
namespace {

constexpr int64_t kMaxId = (int64_t{1} << 31) - 2;

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

}  // namespace

size_t WordCache::ShardOf(absl::string_view word) const {
  return absl::Hash<absl::string_view>{}(word) % kShards;
}

bool WordCache::Lookup(absl::string_view word, std::vector<int32_t>* ids) const {
  Shard& shard = shards_[ShardOf(word)];
  std::shared_lock lock(shard.mu);
  auto it = shard.map.find(word);
  if (it == shard.map.end()) return false;
  ids->insert(ids->end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::Insert(absl::string_view word, const int32_t* ids, size_t n) const {
  Shard& shard = shards_[ShardOf(word)];
  std::unique_lock lock(shard.mu);
  if (shard.map.size() >= kEntriesPerShard) shard.map.clear();
  shard.map.try_emplace(word, ids, ids + n);
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(const Json& value,
                                                          absl::string_view path) {
  if (!value.is_object()) {
    return FieldError(path, absl::StrCat("expected an object, got ", JsonTypeName(value)));
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> type, GetOptionalString(value, path, "type"));
  if (type.has_value() && *type != "BPE") {
    return FieldError(JoinPath(path, "type"),
                      absl::StrCat("unsupported model \"", *type, "\" (fjord supports BPE)"));
  }
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  if (const Json* dropout = FindField(value, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return FieldError(JoinPath(path, "dropout"),
                        absl::StrCat("BPE dropout ", Describe(*dropout),
                                     " is not supported (fjord encodes deterministically; "
                                     "expected null)"));
    }
  }
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> unk,
                         GetOptionalString(value, path, "unk_token"));
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> prefix,
                         GetOptionalString(value, path, "continuing_subword_prefix"));
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                         GetOptionalString(value, path, "end_of_word_suffix"));
  model->prefix_ = prefix.value_or("");
  model->suffix_ = suffix.value_or("");
  FJORD_ASSIGN_OR_RETURN(model->fuse_unk_, GetBool(value, path, "fuse_unk", false));
  FJORD_ASSIGN_OR_RETURN(model->byte_fallback_, GetBool(value, path, "byte_fallback", false));
  FJORD_ASSIGN_OR_RETURN(model->ignore_merges_, GetBool(value, path, "ignore_merges", false));

  // Vocabulary: ids 0..N-1, each once.
  const std::string vocab_path = JoinPath(path, "vocab");
  const Json* vocab = FindField(value, "vocab");
  if (vocab == nullptr) return FieldError(vocab_path, "missing");
  if (!vocab->is_object()) {
    return FieldError(vocab_path,
                      absl::StrCat("expected an object {token: id}, got ", JsonTypeName(*vocab)));
  }
  const size_t n = vocab->size();
  model->tokens_.resize(n);
  std::vector<bool> seen(n, false);
  model->vocab_.reserve(n);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::string field = absl::StrCat(vocab_path, "[", Quoted(it.key()), "]");
    FJORD_ASSIGN_OR_RETURN(const int64_t id, AsUint(it.value(), field, kMaxId));
    if (static_cast<size_t>(id) >= n) {
      return FieldError(field, absl::StrCat("id ", id, " is out of range: the ", n,
                                            " vocabulary ids must be 0..", n - 1));
    }
    if (seen[id]) {
      return FieldError(field,
                        absl::StrCat("id ", id, " is also the id of ", Quoted(model->tokens_[id])));
    }
    seen[id] = true;
    model->tokens_[id] = it.key();
    model->vocab_.emplace(it.key(), static_cast<int32_t>(id));
  }
  if (unk.has_value()) {
    std::optional<int32_t> id = model->TokenToId(*unk);
    if (!id) {
      return FieldError(JoinPath(path, "unk_token"),
                        absl::StrCat(Quoted(*unk), " is not in the vocabulary"));
    }
    model->unk_id_ = *id;
  }
  for (int b = 0; b < 256; ++b) {
    std::optional<int32_t> id = model->TokenToId(absl::StrFormat("<0x%02X>", b));
    model->byte_ids_[b] = id.value_or(-1);
  }

  // Merges: "a b" or ["a", "b"]; rank = position (later duplicates win, as HF).
  const std::string merges_path = JoinPath(path, "merges");
  const Json* merges = FindField(value, "merges");
  if (merges == nullptr) return FieldError(merges_path, "missing");
  if (!merges->is_array()) {
    return FieldError(merges_path, absl::StrCat("expected an array, got ", JsonTypeName(*merges)));
  }
  model->merges_.reserve(merges->size());
  int32_t rank = 0;
  std::string merged;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& m = (*merges)[i];
    const std::string field = IndexPath(merges_path, i);
    absl::string_view left, right;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      if (absl::StartsWith(s, "#version")) continue;
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return FieldError(field,
                          absl::StrCat("expected \"LEFT RIGHT\" (one space), got ", Quoted(s)));
      }
      left = absl::string_view(s).substr(0, space);
      right = absl::string_view(s).substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get_ref<const std::string&>();
      right = m[1].get_ref<const std::string&>();
    } else {
      return FieldError(
          field,
          absl::StrCat("expected \"LEFT RIGHT\" or [\"LEFT\", \"RIGHT\"], got ", Describe(m)));
    }
    std::optional<int32_t> a = model->TokenToId(left), b = model->TokenToId(right);
    if (!a) return FieldError(field, absl::StrCat(Quoted(left), " is not in the vocabulary"));
    if (!b) return FieldError(field, absl::StrCat(Quoted(right), " is not in the vocabulary"));
    if (right.size() < model->prefix_.size()) {
      return FieldError(field,
                        absl::StrCat(Quoted(right), " is shorter than continuing_subword_prefix"));
    }
    merged.assign(left.data(), left.size());
    const absl::string_view rest = right.substr(model->prefix_.size());
    merged.append(rest.data(), rest.size());
    std::optional<int32_t> id = model->TokenToId(merged);
    if (!id) {
      return FieldError(
          field, absl::StrCat("the merged token ", Quoted(merged), " is not in the vocabulary"));
    }
    model->merges_[PairKey(*a, *b)] = Merge{rank++, *id};
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::InitialSymbols(absl::string_view word, std::vector<int32_t>* symbols) const {
  std::string scratch;
  int32_t pending_unk = -1;  // HF keeps an unknown char back to fuse it
  size_t pos = 0;
  bool first = true;
  while (pos < word.size()) {
    const size_t start = pos;
    pos += Utf8Length(static_cast<unsigned char>(word[pos]));
    if (pos > word.size()) pos = word.size();
    const bool last = pos == word.size();
    absl::string_view s = word.substr(start, pos - start);
    if ((!first && !prefix_.empty()) || (last && !suffix_.empty())) {
      scratch.clear();
      if (!first) scratch.append(prefix_);
      scratch.append(s.data(), s.size());
      if (last) scratch.append(suffix_);
      s = scratch;
    }
    first = false;
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      if (pending_unk >= 0) {
        symbols->push_back(pending_unk);
        pending_unk = -1;
      }
      symbols->push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {  // as HF: a pending unk is not flushed first
        for (unsigned char c : s) symbols->push_back(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) symbols->push_back(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) symbols->push_back(pending_unk);
}

void BpeModel::MergeAll(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& ids = *symbols;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < 2) return;
  if (n == 2) {
    auto it = merges_.find(PairKey(ids[0], ids[1]));
    if (it != merges_.end()) ids = {it->second.id};
    return;
  }
  // Symbols form a linked list over their positions; candidate merges wait in
  // a min-heap on (rank, position), stale ones are skipped when popped.
  struct Candidate {
    int32_t rank;
    int64_t pos;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<int64_t> prev, next;
  thread_local std::vector<Candidate> heap;
  prev.resize(static_cast<size_t>(n));
  next.resize(static_cast<size_t>(n));
  heap.clear();
  for (int64_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  auto push = [&](int64_t pos) {
    auto it = merges_.find(PairKey(ids[pos], ids[next[pos]]));
    if (it == merges_.end()) return;
    heap.push_back(Candidate{it->second.rank, pos});
    std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
  };
  for (int64_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate top = heap.back();
    heap.pop_back();
    const int64_t pos = top.pos;
    if (ids[pos] < 0) continue;
    const int64_t right = next[pos];
    if (right < 0) continue;
    auto it = merges_.find(PairKey(ids[pos], ids[right]));
    if (it == merges_.end() || it->second.rank != top.rank) continue;  // stale entry
    ids[pos] = it->second.id;
    ids[right] = -1;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    if (prev[pos] >= 0) push(prev[pos]);
    if (next[pos] >= 0) push(pos);
  }
  ids.erase(std::remove(ids.begin(), ids.end(), -1), ids.end());
  if (prev.capacity() > (size_t{1} << 20)) {  // do not pin the memory of one huge word
    std::vector<int64_t>().swap(prev);
    std::vector<int64_t>().swap(next);
    std::vector<Candidate>().swap(heap);
  }
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable && cache_.Lookup(word, ids)) return;
  thread_local std::vector<int32_t> symbols;
  symbols.clear();
  InitialSymbols(word, &symbols);
  MergeAll(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  if (cacheable) cache_.Insert(word, symbols.data(), symbols.size());
  if (symbols.capacity() > (size_t{1} << 20)) std::vector<int32_t>().swap(symbols);
}

}  // namespace fjord::tokenizer::internal
