// The BPE model (bpe.h): merge order, unknown characters (unk, fuse_unk,
// byte_fallback) in HF's exact order, subword prefix/suffix, ignore_merges,
// the cache, and a randomized check of the priority-queue merge against the
// textbook "merge the lowest-ranked pair, leftmost first" loop. Expected
// tokens are what Hugging Face tokenizers produces for the same model.
#include "runtime/tokenizer/bpe.h"

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Json;
using testing::StatusIs;

Json ModelJson(Json vocab, Json merges, Json extra = Json::object()) {
  Json m = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  for (auto it = extra.begin(); it != extra.end(); ++it) m[it.key()] = it.value();
  return m;
}

std::unique_ptr<BpeModel> Parse(const Json& j) {
  absl::StatusOr<std::unique_ptr<BpeModel>> m = BpeModel::Parse(j, "model");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

std::vector<std::string> Tokens(const BpeModel& m, const std::string& word) {
  std::vector<int32_t> ids;
  m.Tokenize(word, &ids);
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(m.IdToToken(id));
  return out;
}

TEST(BpeTest, LowestRankFirstLaterDuplicatesWin) {
  const Json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
  auto m = Parse(ModelJson(vocab, {"b c", "a b", "b c"}));  // "b c" ranks 2
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("ab", "c"));
  m = Parse(ModelJson(vocab, {"a b", "b c", "a b"}));
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("a", "bc"));
  m = Parse(ModelJson(vocab, Json::array({Json::array({"a", "b"}), Json::array({"ab", "c"})})));
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("abc"));
  m = Parse(ModelJson(vocab, {"#version: 0.2", "a b"}));  // merges.txt header skipped
  EXPECT_THAT(Tokens(*m, "ab"), ElementsAre("ab"));
  EXPECT_EQ(m->size(), 6);
  EXPECT_EQ(m->TokenToId("bc"), 4);
  EXPECT_EQ(m->TokenToId("zz"), std::nullopt);
}

TEST(BpeTest, EqualRanksMergeLeftmostFirst) {
  auto m = Parse(ModelJson({{"a", 0}, {"aa", 1}}, {"a a"}));
  EXPECT_THAT(Tokens(*m, "aaa"), ElementsAre("aa", "a"));
  EXPECT_THAT(Tokens(*m, "aaaaa"), ElementsAre("aa", "aa", "a"));
}

TEST(BpeTest, ContinuingSubwordPrefixAndEndOfWordSuffix) {
  auto m = Parse(ModelJson({{"a", 0},
                            {"b", 1},
                            {"c", 2},
                            {"##b", 3},
                            {"##c", 4},
                            {"a##b", 5},
                            {"ab", 6},
                            {"##bc", 7},
                            {"abc", 8},
                            {"<unk>", 9}},
                           {"a ##b", "##b ##c"},
                           {{"continuing_subword_prefix", "##"}, {"unk_token", "<unk>"}}));
  EXPECT_THAT(Tokens(*m, "ab"), ElementsAre("ab"));
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("ab", "##c"));
  EXPECT_THAT(Tokens(*m, "bc"), ElementsAre("b", "##c"));
  EXPECT_THAT(Tokens(*m, "ax"), ElementsAre("a", "<unk>"));
  m = Parse(ModelJson({{"a", 0},
                       {"b", 1},
                       {"c", 2},
                       {"b</w>", 3},
                       {"c</w>", 4},
                       {"ab</w>", 5},
                       {"a</w>", 6},
                       {"<unk>", 7}},
                      {"a b</w>"}, {{"end_of_word_suffix", "</w>"}, {"unk_token", "<unk>"}}));
  EXPECT_THAT(Tokens(*m, "ab"), ElementsAre("ab</w>"));
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("a", "b", "c</w>"));
  EXPECT_THAT(Tokens(*m, "a"), ElementsAre("a</w>"));
  EXPECT_THAT(Tokens(*m, "x"), ElementsAre("<unk>"));
}

// HF keeps one unknown character back to fuse it with the next: byte
// fallback tokens can come before it ("ayxb" with fuse_unk false gives
// a <0x78> <unk> b).
TEST(BpeTest, UnknownCharactersInHfOrder) {
  const Json vocab = {{"a", 0}, {"b", 1}, {"<unk>", 2}, {"ab", 3}, {"<0x78>", 4}};
  struct Case {
    bool fuse, fallback;
    std::vector<std::string> axyzb, yyx;
  };
  const std::vector<Case> cases = {
      {false, false, {"a", "<unk>", "<unk>", "<unk>", "b"}, {"<unk>", "<unk>", "<unk>"}},
      {false, true, {"a", "<0x78>", "<unk>", "<unk>", "b"}, {"<unk>", "<0x78>", "<unk>"}},
      {true, false, {"a", "<unk>", "b"}, {"<unk>"}},
      {true, true, {"a", "<0x78>", "<unk>", "b"}, {"<0x78>", "<unk>"}},
  };
  for (const Case& c : cases) {
    auto m = Parse(
        ModelJson(vocab, {"a b"},
                  {{"unk_token", "<unk>"}, {"fuse_unk", c.fuse}, {"byte_fallback", c.fallback}}));
    EXPECT_EQ(Tokens(*m, "axyzb"), c.axyzb) << c.fuse << c.fallback;
    EXPECT_EQ(Tokens(*m, "yyx"), c.yyx) << c.fuse << c.fallback;
  }
  // "é" is two bytes; without <0xC3> it is unknown as a whole.
  auto m = Parse(ModelJson(vocab, {"a b"}, {{"unk_token", "<unk>"}, {"byte_fallback", true}}));
  EXPECT_THAT(Tokens(*m,
                     "\xC3\xA9"
                     "a"),
              ElementsAre("<unk>", "a"));
  // No unk token: unknown characters are dropped.
  m = Parse(ModelJson(vocab, {"a b"}));
  EXPECT_THAT(Tokens(*m, "axyzb"), ElementsAre("ab"));
}

TEST(BpeTest, ByteFallbackTokensMerge) {
  auto m = Parse(ModelJson({{"a", 0}, {"<0x78>", 1}, {"<0x78><0x78>", 2}, {"<unk>", 3}},
                           {"<0x78> <0x78>"}, {{"unk_token", "<unk>"}, {"byte_fallback", true}}));
  EXPECT_THAT(Tokens(*m, "xx"), ElementsAre("<0x78><0x78>"));
}

TEST(BpeTest, IgnoreMergesEmitsWholeWords) {
  const Json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
  auto m = Parse(ModelJson(vocab, {"a b"}, {{"ignore_merges", true}}));
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("abc"));
  EXPECT_THAT(Tokens(*m, "bcab"), ElementsAre("b", "c", "ab"));
  m = Parse(ModelJson(vocab, {"a b"}));
  EXPECT_THAT(Tokens(*m, "abc"), ElementsAre("ab", "c"));
}

// The textbook BPE loop, for comparison.
std::vector<int32_t> ReferenceMerge(
    std::vector<int32_t> ids,
    const std::vector<std::pair<std::pair<int32_t, int32_t>, int32_t>>& merges) {
  while (true) {
    size_t best = ids.size();
    size_t best_rank = merges.size();
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      for (size_t r = 0; r < best_rank; ++r) {
        if (merges[r].first == std::make_pair(ids[i], ids[i + 1])) {
          best = i;
          best_rank = r;
          break;
        }
      }
    }
    if (best == ids.size()) return ids;
    ids[best] = merges[best_rank].second;
    ids.erase(ids.begin() + static_cast<long>(best) + 1);
  }
}

TEST(BpeTest, PriorityQueueMergeEqualsTheTextbookLoop) {
  std::mt19937 rng(42);
  // Vocabulary "a".."d" and random merges of existing tokens.
  std::vector<std::string> tokens = {"a", "b", "c", "d"};
  std::vector<std::pair<std::pair<int32_t, int32_t>, int32_t>> merges;
  Json merge_json = Json::array();
  while (merges.size() < 60) {
    const int32_t l = static_cast<int32_t>(rng() % tokens.size());
    const int32_t r = static_cast<int32_t>(rng() % tokens.size());
    const std::string merged = tokens[l] + tokens[r];
    if (merged.size() > 6 || std::find(tokens.begin(), tokens.end(), merged) != tokens.end()) {
      continue;
    }
    tokens.push_back(merged);
    merges.push_back({{l, r}, static_cast<int32_t>(tokens.size() - 1)});
    merge_json.push_back(Json{tokens[l], tokens[r]});
  }
  Json vocab = Json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  auto m = Parse(ModelJson(vocab, merge_json));
  ASSERT_NE(m, nullptr);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string word;
    std::vector<int32_t> chars;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      const int c = static_cast<int>(rng() % 4);
      word.push_back(static_cast<char>('a' + c));
      chars.push_back(c);
    }
    std::vector<int32_t> ids;
    m->Tokenize(word, &ids);
    EXPECT_EQ(ids, ReferenceMerge(chars, merges)) << word;
    std::vector<int32_t> again;  // the cached result is the same
    m->Tokenize(word, &again);
    EXPECT_EQ(again, ids) << word;
  }
}

TEST(BpeTest, ParseErrors) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  const Json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}};
  EXPECT_THAT(BpeModel::Parse(ModelJson(vocab, {"a c"}), "model"),
              StatusIs(kInvalid, "model.merges[0]: \"c\" is not in the vocabulary"));
  EXPECT_THAT(
      BpeModel::Parse(ModelJson(vocab, {"b a"}), "model"),
      StatusIs(kInvalid, "model.merges[0]: the merged token \"ba\" is not in the vocabulary"));
  EXPECT_THAT(
      BpeModel::Parse(ModelJson(vocab, {"ab"}), "model"),
      StatusIs(kInvalid, HasSubstr("model.merges[0]: expected \"LEFT RIGHT\" (one space)")));
  EXPECT_THAT(BpeModel::Parse(ModelJson(vocab, {7}), "model"),
              StatusIs(kInvalid, HasSubstr("model.merges[0]: expected \"LEFT RIGHT\" or")));
  EXPECT_THAT(BpeModel::Parse(ModelJson(vocab, Json::object()), "model"),
              StatusIs(kInvalid, "model.merges: expected an array, got object"));
  EXPECT_THAT(BpeModel::Parse(ModelJson({{"a", 0}, {"b", 0}}, Json::array()), "model"),
              StatusIs(kInvalid, "model.vocab[\"b\"]: id 0 is also the id of \"a\""));
  EXPECT_THAT(BpeModel::Parse(ModelJson({{"a", 0}, {"b", 2}}, Json::array()), "model"),
              StatusIs(kInvalid, HasSubstr("model.vocab[\"b\"]: id 2 is out of range")));
  EXPECT_THAT(BpeModel::Parse(ModelJson({{"a", 1.5}}, Json::array()), "model"),
              StatusIs(kInvalid, "model.vocab[\"a\"]: expected a non-negative integer, got 1.5"));
  EXPECT_THAT(
      BpeModel::Parse(ModelJson(vocab, {"a b"}, {{"continuing_subword_prefix", "###"}}), "model"),
      StatusIs(kInvalid, HasSubstr("is shorter than continuing_subword_prefix")));
  EXPECT_THAT(BpeModel::Parse(ModelJson(vocab, {"a b"}, {{"type", "Unigram"}}), "model"),
              StatusIs(kInvalid, HasSubstr("model.type: unsupported model \"Unigram\"")));
  EXPECT_THAT(BpeModel::Parse(ModelJson(vocab, {"a b"}, {{"dropout", 0.5}}), "model"),
              StatusIs(kInvalid, HasSubstr("model.dropout: BPE dropout 0.5 is not supported")));
  EXPECT_THAT(BpeModel::Parse(Json{{"merges", Json::array()}}, "model"),
              StatusIs(kInvalid, "model.vocab: missing"));
  // No "type": a BPE (as HF infers from vocab + merges).
  EXPECT_TRUE(BpeModel::Parse(Json{{"vocab", vocab}, {"merges", {"a b"}}}, "model").ok());
}

}  // namespace
}  // namespace fjord::tokenizer::internal
