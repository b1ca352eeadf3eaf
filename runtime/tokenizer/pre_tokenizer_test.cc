// Pre-tokenizers (pre_tokenizer.h); expected pieces are Hugging Face
// tokenizers' pre_tokenize_str on the same text.
#include "runtime/tokenizer/pre_tokenizer.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using testing::ByteLevel;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Json;
using testing::StatusIs;

std::vector<std::string> PreTokenize(const Json& j, const std::vector<std::string>& texts,
                                     std::vector<bool>* at_start = nullptr) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> p = ParsePreTokenizer(j, "pre_tokenizer");
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  Pieces in, out;
  for (size_t i = 0; i < texts.size(); ++i) in.Add(texts[i], i == 0);
  (*p)->Apply(in, &out);
  std::vector<std::string> pieces;
  for (size_t i = 0; i < out.size(); ++i) {
    pieces.emplace_back(out[i]);
    if (at_start != nullptr) at_start->push_back(out.at_start(i));
  }
  return pieces;
}

std::vector<std::string> SplitWith(const std::string& regex, const std::string& behavior,
                                   const std::string& text, bool invert = false) {
  return PreTokenize(testing::SplitPreTokenizer(regex, behavior, invert), {text});
}

TEST(SplitSpansTest, EveryBehaviorAsHf) {
  EXPECT_THAT(SplitWith("x*", "Isolated", "abxxc"), ElementsAre("a", "b", "xx", "c"));
  EXPECT_THAT(SplitWith("x*", "Removed", "abxxc"), ElementsAre("a", "b", "c"));
  EXPECT_THAT(SplitWith("x*", "MergedWithPrevious", "abxxc"), ElementsAre("a", "bxx", "c"));
  EXPECT_THAT(SplitWith("x*", "MergedWithNext", "abxxc"), ElementsAre("a", "b", "xxc"));
  EXPECT_THAT(SplitWith("x*", "Contiguous", "abxxc"), ElementsAre("a", "b", "xx", "c"));
  EXPECT_THAT(SplitWith("-", "Isolated", "a--b-c-"),
              ElementsAre("a", "-", "-", "b", "-", "c", "-"));
  EXPECT_THAT(SplitWith("-", "Removed", "a--b-c-"), ElementsAre("a", "b", "c"));
  EXPECT_THAT(SplitWith("-", "MergedWithPrevious", "a--b-c-"), ElementsAre("a-", "-", "b-", "c-"));
  EXPECT_THAT(SplitWith("-", "MergedWithNext", "a--b-c-"), ElementsAre("a", "-", "-b", "-c", "-"));
  EXPECT_THAT(SplitWith("-", "Contiguous", "a--b-c-"), ElementsAre("a", "--", "b", "-", "c", "-"));
  EXPECT_THAT(SplitWith("\\d+", "Removed", "a12b3", /*invert=*/true), ElementsAre("12", "3"));
  EXPECT_THAT(
      PreTokenize(
          {{"type", "Split"}, {"pattern", {{"String", "ab"}}}, {"behavior", "MergedWithNext"}},
          {"xabyab"}),
      ElementsAre("x", "aby", "ab"));
}

TEST(PreTokenizerTest, ByteLevelAddsPrefixSpacePerPiece) {
  // HF: every piece not starting with a space gets one.
  const Json seq = {
      {"type", "Sequence"},
      {"pretokenizers",
       {testing::SplitPreTokenizer("\\d+|\\D+"), testing::ByteLevelPreTokenizer(true, false)}}};
  EXPECT_THAT(PreTokenize(seq, {"ab12cd ef"}),
              ElementsAre(ByteLevel(" ab"), ByteLevel(" 12"), ByteLevel(" cd ef")));
  EXPECT_THAT(PreTokenize(testing::ByteLevelPreTokenizer(true, true), {"Hello  world's 123!"}),
              ElementsAre(ByteLevel(" Hello"), ByteLevel(" "), ByteLevel(" world"), "'s",
                          ByteLevel(" 123"), "!"));
  EXPECT_THAT(PreTokenize(testing::ByteLevelPreTokenizer(false, false), {"\xC3\xA9 \n"}),
              ElementsAre(ByteLevel("\xC3\xA9 \n")));
}

TEST(PreTokenizerTest, MetaspaceSchemes) {
  const std::string sp = "\xE2\x96\x81";
  auto meta = [&](const std::string& scheme, bool split) {
    return Json{
        {"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", scheme}, {"split", split}};
  };
  // Two pieces, as between added tokens: only the first is at the start.
  std::vector<bool> starts;
  EXPECT_THAT(PreTokenize(meta("first", true), {"ab cd", "ef gh"}, &starts),
              ElementsAre(sp + "ab", sp + "cd", "ef", sp + "gh"));
  EXPECT_THAT(starts, ElementsAre(true, false, false, false));
  EXPECT_THAT(PreTokenize(meta("always", true), {"ab cd", "ef"}),
              ElementsAre(sp + "ab", sp + "cd", sp + "ef"));
  EXPECT_THAT(PreTokenize(meta("never", true), {"ab cd"}), ElementsAre("ab", sp + "cd"));
  EXPECT_THAT(PreTokenize(meta("first", false), {"  ab  cd "}),
              ElementsAre(sp + sp + "ab" + sp + sp + "cd" + sp));
  EXPECT_THAT(PreTokenize(meta("always", true), {"  ab  cd "}),
              ElementsAre(sp, sp + "ab", sp, sp + "cd", sp));
  // Legacy files: add_prefix_space instead of prepend_scheme.
  EXPECT_THAT(PreTokenize({{"type", "Metaspace"}, {"replacement", sp}, {"add_prefix_space", false}},
                          {"a b"}),
              ElementsAre("a", sp + "b"));
}

TEST(PreTokenizerTest, DigitsWhitespace) {
  EXPECT_THAT(PreTokenize({{"type", "Digits"}, {"individual_digits", true}}, {"a123b\xD9\xA3"
                                                                              "4"}),
              ElementsAre("a", "1", "2", "3", "b", "\xD9\xA3", "4"));
  EXPECT_THAT(PreTokenize({{"type", "Digits"}, {"individual_digits", false}}, {"a123b\xD9\xA3"
                                                                               "4"}),
              ElementsAre("a", "123", "b",
                          "\xD9\xA3"
                          "4"));
  EXPECT_THAT(PreTokenize({{"type", "WhitespaceSplit"}}, {" a\xE3\x80\x80"
                                                          "b\xC2\xA0 c "}),
              ElementsAre("a", "b", "c"));
  EXPECT_THAT(PreTokenize({{"type", "Whitespace"}}, {"Hello, world! \xC3\xA9_x 12.5 \xC2\xA0ok"}),
              ElementsAre("Hello", ",", "world", "!", "\xC3\xA9_x", "12", ".", "5", "ok"));
}

TEST(PreTokenizerTest, NestedSequences) {
  const Json inner = {{"type", "Sequence"},
                      {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}}}}};
  const Json outer = {{"type", "Sequence"},
                      {"pretokenizers", {inner, testing::ByteLevelPreTokenizer(false, false)}}};
  EXPECT_THAT(PreTokenize(outer, {"ab12 c"}), ElementsAre("ab", "12", "c"));
  EXPECT_THAT(PreTokenize({{"type", "Sequence"}, {"pretokenizers", Json::array()}}, {"a b"}),
              ElementsAre("a b"));
}

TEST(PreTokenizerTest, Errors) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(ParsePreTokenizer({{"type", "Split"}, {"behavior", "Isolated"}}, "p"),
              StatusIs(kInvalid, "p.pattern: missing"));
  EXPECT_THAT(ParsePreTokenizer({{"type", "Split"}, {"pattern", {{"String", "x"}}}}, "p"),
              StatusIs(kInvalid, "p.behavior: missing"));
  EXPECT_THAT(ParsePreTokenizer(
                  {{"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "x"}}, "p"),
              StatusIs(kInvalid, HasSubstr("p.prepend_scheme: unknown prepend_scheme \"x\"")));
  EXPECT_THAT(
      ParsePreTokenizer({{"type", "Sequence"}, {"pretokenizers", {{{"type", "Nope"}}}}}, "p"),
      StatusIs(kInvalid, HasSubstr("p.pretokenizers[0].type: unsupported pre_tokenizer")));
  EXPECT_THAT(ParsePreTokenizer({{"type", "Sequence"}, {"pretokenizers", "x"}}, "p"),
              StatusIs(kInvalid, "p.pretokenizers: expected an array, got string"));
  EXPECT_THAT(ParsePreTokenizer({{"type", "ByteLevel"}, {"use_regex", "yes"}}, "p"),
              StatusIs(kInvalid, "p.use_regex: expected a boolean, got string"));
}

}  // namespace
}  // namespace fjord::tokenizer::internal
