// Normalizers parsed from tokenizer.json (normalizer.h); expected outputs are
// Hugging Face tokenizers'.
#include "runtime/tokenizer/normalizer.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using ::testing::HasSubstr;
using testing::Json;
using testing::StatusIs;

std::string Apply(const Json& j, std::string text) {
  absl::StatusOr<std::unique_ptr<Normalizer>> n = ParseNormalizer(j, "normalizer");
  EXPECT_TRUE(n.ok()) << n.status();
  if (n.ok()) (*n)->Apply(&text);
  return text;
}

const std::string kSp = "\xE2\x96\x81";  // ▁

TEST(NormalizerTest, Llama2Sequence) {
  const Json j = {{"type", "Sequence"},
                  {"normalizers",
                   {{{"type", "Prepend"}, {"prepend", kSp}},
                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}}}}};
  EXPECT_EQ(Apply(j, "Hello world"), kSp + "Hello" + kSp + "world");
  EXPECT_EQ(Apply(j, " x"), kSp + kSp + "x");
  EXPECT_EQ(Apply(j, ""), "");  // Prepend leaves empty text alone
}

TEST(NormalizerTest, UnicodeForms) {
  EXPECT_EQ(Apply({{"type", "NFC"}}, "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(Apply({{"type", "NFD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(Apply({{"type", "NFKC"}}, "\xEF\xAC\x81 \xE2\x91\xA0 \xC2\xBD"),
            "fi 1 1\xE2\x81\x84"
            "2");
  EXPECT_EQ(Apply({{"type", "NFKD"}}, "\xC3\xA9"), "e\xCC\x81");
}

TEST(NormalizerTest, ReplaceRegexAndStrip) {
  EXPECT_EQ(
      Apply({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", "_"}}, "a  b\t\nc"),
      "a_b_c");
  EXPECT_EQ(Apply({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                  "\xE3\x80\x80 a b \n"),
            "a b");
  EXPECT_EQ(Apply({{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}}, " a "), " a");
  EXPECT_EQ(Apply({{"type", "Strip"}}, "   "), "");
  EXPECT_EQ(Apply({{"type", "Sequence"}, {"normalizers", Json::array()}}, "x"), "x");
}

TEST(NormalizerTest, Errors) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(
      ParseNormalizer({{"type", "Lowercase"}}, "normalizer"),
      StatusIs(kInvalid, HasSubstr("normalizer.type: unsupported normalizer \"Lowercase\"")));
  EXPECT_THAT(ParseNormalizer({{"type", "Prepend"}}, "normalizer"),
              StatusIs(kInvalid, "normalizer.prepend: missing"));
  EXPECT_THAT(ParseNormalizer({{"type", "Replace"}, {"content", "x"}}, "n"),
              StatusIs(kInvalid, "n.pattern: missing"));
  EXPECT_THAT(
      ParseNormalizer({{"type", "Replace"}, {"pattern", {{"Regex", "("}}}, {"content", ""}}, "n"),
      StatusIs(kInvalid, HasSubstr("n.pattern.Regex: invalid regex")));
  EXPECT_THAT(ParseNormalizer({{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, 3}}}, "n"),
              StatusIs(kInvalid, "n.normalizers[1]: expected an object, got number"));
  EXPECT_THAT(ParseNormalizer({{"type", "Strip"}, {"strip_left", 1}}, "n"),
              StatusIs(kInvalid, "n.strip_left: expected a boolean, got number"));
  EXPECT_THAT(ParseNormalizer(Json::array(), "normalizer"),
              StatusIs(kInvalid, "normalizer: expected an object, got array"));
}

}  // namespace
}  // namespace fjord::tokenizer::internal
