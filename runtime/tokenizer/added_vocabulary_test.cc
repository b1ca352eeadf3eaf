// Added-token matching (added_vocabulary.h). Expected splits are Hugging
// Face tokenizers' for the same tokens and text.
#include "runtime/tokenizer/added_vocabulary.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using ::testing::ElementsAre;

AddedToken Token(const std::string& content, int32_t id, bool special = false) {
  AddedToken t;
  t.content = content;
  t.id = id;
  t.special = special;
  t.normalized = false;
  return t;
}

// "text|id" for tokens, "text" for the text between them.
std::vector<std::string> Split(const AddedVocabulary& v, const std::string& text,
                               bool normalized = false, bool skip_special = false) {
  std::vector<Segment> segments;
  v.Split(text, normalized, skip_special, &segments);
  std::vector<std::string> out;
  for (const Segment& s : segments) {
    std::string piece = text.substr(s.start, s.end - s.start);
    if (s.token_id >= 0) piece += "|" + std::to_string(s.token_id);
    out.push_back(piece);
  }
  return out;
}

TEST(AddedVocabularyTest, LeftmostLongest) {
  AddedVocabulary v({Token("<s>", 1, true), Token("<s>x", 2), Token("s>", 3), Token("", 9)},
                    nullptr);
  EXPECT_EQ(v.tokens().size(), 3u);  // the empty one is ignored
  EXPECT_THAT(Split(v, "a<s>xb<s>"), ElementsAre("a", "<s>x|2", "b", "<s>|1"));
  EXPECT_THAT(Split(v, "<s>"), ElementsAre("<s>|1"));
  EXPECT_THAT(Split(v, "plain"), ElementsAre("plain"));
  EXPECT_TRUE(Split(v, "").empty());
  // A skipped special is not searched again for shorter tokens ("s>").
  EXPECT_THAT(Split(v, "a<s>b", false, /*skip_special=*/true), ElementsAre("a<s>b"));
  EXPECT_THAT(Split(v, "a<s>xb", false, true), ElementsAre("a", "<s>x|2", "b"));
}

TEST(AddedVocabularyTest, SingleWordLstripRstrip) {
  AddedToken single = Token("ab", 10);
  single.single_word = true;
  AddedToken both = Token("<m>", 11);
  both.lstrip = true;
  both.rstrip = true;
  AddedToken left = Token("cd", 12);
  left.lstrip = true;
  AddedVocabulary v({single, both, left}, nullptr);
  EXPECT_THAT(Split(v, "ab xab aby ab"), ElementsAre("ab|10", " xab aby ", "ab|10"));
  EXPECT_THAT(Split(v, "_ab_"), ElementsAre("_ab_"));
  EXPECT_THAT(Split(v,
                    "\xC3\xA9"
                    "ab"),
              ElementsAre("\xC3\xA9"
                          "ab"));
  EXPECT_THAT(Split(v, "x  <m>  y"), ElementsAre("x", "  <m>  |11", "y"));
  EXPECT_THAT(Split(v, "x <m><m> y"), ElementsAre("x", " <m>|11", "<m> |11", "y"));
  EXPECT_THAT(Split(v, "xx  cd"), ElementsAre("xx", "  cd|12"));
  EXPECT_THAT(Split(v, "  cd"), ElementsAre("  cd|12"));
}

TEST(AddedVocabularyTest, RstripThenATokenInsideTheStrippedSpace) {
  // HF keeps both " fjord" tokens of " fjord fjord" although the first one's
  // rstrip took the space the second starts with.
  AddedToken t = Token(" fjord", 5);
  t.rstrip = true;
  AddedVocabulary v({t}, nullptr);
  std::vector<Segment> segments;
  v.Split("his fjord fjord x", false, false, &segments);
  std::vector<int32_t> ids;
  for (const Segment& s : segments) ids.push_back(s.token_id);
  EXPECT_THAT(ids, ElementsAre(-1, 5, 5, -1));
}

TEST(AddedVocabularyTest, NormalizedTokensMatchTheirNormalizedSpelling) {
  const std::string sp = "\xE2\x96\x81";
  absl::StatusOr<std::unique_ptr<Normalizer>> n = ParseNormalizer(
      testing::Json{{"type", "Sequence"},
                    {"normalizers",
                     {{{"type", "Prepend"}, {"prepend", sp}},
                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}},
      "n");
  ASSERT_TRUE(n.ok());
  AddedToken s = Token("<s>", 1, true);
  s.normalized = true;
  AddedToken raw = Token("qq", 2);
  AddedVocabulary v({s, raw}, n->get());
  // The normalized pattern is "▁<s>": it matches only after a space.
  EXPECT_THAT(Split(v, sp + "ab" + sp + "<s>" + sp + "cd", /*normalized=*/true),
              ElementsAre(sp + "ab", sp + "<s>|1", sp + "cd"));
  EXPECT_THAT(Split(v, "ab<s>", true), ElementsAre("ab<s>"));
  EXPECT_THAT(Split(v, "aqq b", false), ElementsAre("a", "qq|2", " b"));
  EXPECT_THAT(Split(v, "aqq b", true), ElementsAre("aqq b"));
}

}  // namespace
}  // namespace fjord::tokenizer::internal
