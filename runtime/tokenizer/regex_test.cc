// Oniguruma -> PCRE2 translation and Oniguruma's find_iter semantics
// (regex.h). Expected matches are Hugging Face tokenizers' (Split with
// behavior Isolated on the same text).
#include "runtime/tokenizer/regex.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::StatusIs;

std::vector<Span> Find(const std::string& pattern, const std::string& text) {
  absl::StatusOr<Regex> re = Regex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status();
  std::vector<Span> out;
  if (re.ok()) re->FindAll(text, &out);
  return out;
}

std::vector<std::string> Matches(const std::string& pattern, const std::string& text) {
  std::vector<std::string> out;
  for (const Span& s : Find(pattern, text)) out.push_back(text.substr(s.first, s.second - s.first));
  return out;
}

TEST(RegexTest, EmptyMatchesAsOniguruma) {
  // HF: "abxxc" with x* splits a | b | xx | c: empty matches at 0, 1 and 5,
  // none right after "xx".
  EXPECT_THAT(Find("x*", "abxxc"), ElementsAre(Span(0, 0), Span(1, 1), Span(2, 4), Span(5, 5)));
  EXPECT_THAT(Find("x*", ""), ElementsAre(Span(0, 0)));
  EXPECT_THAT(Find("\\b", "ab cd"), ElementsAre(Span(0, 0), Span(2, 2), Span(3, 3), Span(5, 5)));
  // Stepping over an empty match moves by a whole character.
  EXPECT_THAT(Find("x*", "\xC3\xA9"), ElementsAre(Span(0, 0), Span(2, 2)));
}

TEST(RegexTest, Llama3Pattern) {
  EXPECT_THAT(Matches(testing::kLlama3Pattern, "Hello world's 12345  \n\n x\xC3\xA9!!"),
              ElementsAre("Hello", " world", "'s", " ", "123", "45", "  \n\n", " x\xC3\xA9", "!!"));
  EXPECT_THAT(Matches(testing::kLlama3Pattern, "I'M DON'T"), ElementsAre("I", "'M", " DON", "'T"));
}

TEST(RegexTest, OnigurumaSemantics) {
  EXPECT_THAT(Matches("^a", "ab\nab\na"), ElementsAre("a", "a", "a"));  // line anchors
  EXPECT_THAT(Matches("b$", "ab\nab\nab"), ElementsAre("b", "b", "b"));
  EXPECT_THAT(Matches("a.b", "a\nb axb"), ElementsAre("axb"));
  EXPECT_THAT(Matches("(?m)a.b", "a\nb axb"), ElementsAre("a\nb", "axb"));  // Ruby's m
  EXPECT_THAT(Matches("\\h+", "xyz 0af G"), ElementsAre("0af"));            // hex digit
  EXPECT_THAT(Matches("\\u00e9", "\xC3\xA9"), ElementsAre("\xC3\xA9"));
  EXPECT_THAT(Matches("(?i:'s)", "'S '\xC5\xBF"), ElementsAre("'S", "'\xC5\xBF"));  // ſ
  EXPECT_THAT(Matches("\\s+",
                      "a\xC2\xA0\xE1\xA0\x8E"
                      "b"),
              ElementsAre("\xC2\xA0"));  // not U+180E
  EXPECT_THAT(Matches("\\d+", "12 \xD9\xA1\xD9\xA2 \xC2\xB2"),
              ElementsAre("12", "\xD9\xA1\xD9\xA2"));
  EXPECT_THAT(Matches("[^\\s\\p{L}]+", "ab, cd!"), ElementsAre(",", "!"));
  EXPECT_THAT(Matches("[\\S]+", "ab cd"), ElementsAre("ab", "cd"));
  EXPECT_THAT(Matches("[^\\W\\d]+", "ab12_c"), ElementsAre("ab", "_c"));
}

TEST(RegexTest, TranslatesWhatPcre2SpellsDifferently) {
  EXPECT_EQ(*TranslateOnigurumaPattern("a\\h"), "a[0-9a-fA-F]");
  EXPECT_EQ(*TranslateOnigurumaPattern("\\u4e00"), "\\x{4e00}");
  EXPECT_EQ(*TranslateOnigurumaPattern("(?mi:x)"), "(?si:x)");
  EXPECT_THAT(*TranslateOnigurumaPattern("\\s"), HasSubstr("\\x{3000}"));
  EXPECT_EQ(*TranslateOnigurumaPattern("[]a]"), "[]a]");
  EXPECT_EQ(*TranslateOnigurumaPattern("\\p{Greek}"), "\\p{Greek}");  // no delta: PCRE2's
  // \p{L} gains the letters of Unicode versions after PCRE2's.
  EXPECT_THAT(*TranslateOnigurumaPattern("\\p{L}"), HasSubstr("\\x{31350}-\\x{323AF}"));
}

TEST(RegexTest, RefusesWhatItCannotTranslate) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(Regex::Compile("[a-z&&[^aeiou]]"),
              StatusIs(kInvalid,
                       "unsupported regex construct at offset 4: character class "
                       "intersection (&&)"));
  EXPECT_THAT(Regex::Compile("[a[bc]]"), StatusIs(kInvalid, HasSubstr("nested character class")));
  EXPECT_THAT(Regex::Compile("ab\\"), StatusIs(kInvalid, HasSubstr("trailing backslash")));
  EXPECT_THAT(Regex::Compile("\\u12"), StatusIs(kInvalid, HasSubstr("four hexadecimal digits")));
  EXPECT_THAT(Regex::Compile("[abc"),
              StatusIs(kInvalid, HasSubstr("unterminated character class")));
  EXPECT_THAT(Regex::Compile("a)"),
              StatusIs(kInvalid, HasSubstr("invalid regex (unmatched closing parenthesis")));
  EXPECT_THAT(Regex::Compile("\\p{NoSuchProperty}"),
              StatusIs(kInvalid, HasSubstr("unknown property")));
}

TEST(RegexTest, LongRunsDoNotHitLimits) {
  const std::string spaces(200000, ' ');
  EXPECT_THAT(Find(testing::kLlama3Pattern, spaces + "x"),
              ElementsAre(Span(0, 199999), Span(199999, 200001)));
  const std::string letters(200000, 'a');
  EXPECT_THAT(Find(testing::kLlama3Pattern, letters), ElementsAre(Span(0, 200000)));
}

TEST(PatternTest, LiteralsAndParsing) {
  std::vector<Span> out;
  FindAllLiteral("ab", "abab-aab", &out);
  EXPECT_THAT(out, ElementsAre(Span(0, 2), Span(2, 4), Span(6, 8)));
  out.clear();
  FindAllLiteral("", "abc", &out);
  EXPECT_TRUE(out.empty());
  absl::StatusOr<Pattern> p = Pattern::Parse(testing::Json{{"String", "."}}, "x");
  ASSERT_TRUE(p.ok());
  out.clear();
  p->FindAll("a.b", &out);  // a literal dot, not any character
  EXPECT_THAT(out, ElementsAre(Span(1, 2)));
  EXPECT_THAT(Pattern::Parse(testing::Json{{"Glob", "*"}}, "f.pattern"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "f.pattern: expected {\"String\": ...} or {\"Regex\": ...}"));
  EXPECT_THAT(Pattern::Parse(testing::Json{{"Regex", 3}}, "f.pattern"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "f.pattern.Regex: expected a string, got number"));
}

}  // namespace
}  // namespace fjord::tokenizer::internal
