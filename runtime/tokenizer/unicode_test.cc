// UTF-8 repair, character properties and normalization (unicode.h). Expected
// values are what Hugging Face tokenizers / Python produce.
#include "runtime/tokenizer/unicode.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::tokenizer::internal {
namespace {

std::string Utf8(uint32_t cp) {
  std::string s;
  AppendUtf8(cp, &s);
  return s;
}

constexpr char kFffd[] = "\xEF\xBF\xBD";

TEST(Utf8Test, EncodeDecodeRoundTrip) {
  for (uint32_t cp : {0x0u, 0x41u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xFFFFu, 0x10000u, 0x10FFFFu}) {
    const std::string s = Utf8(cp);
    EXPECT_EQ(s.size(), cp < 0x80 ? 1u : cp < 0x800 ? 2u : cp < 0x10000 ? 3u : 4u);
    EXPECT_EQ(Utf8Length(static_cast<unsigned char>(s[0])), static_cast<int>(s.size()));
    size_t pos = 0;
    EXPECT_EQ(DecodeUtf8(s, &pos), cp);
    EXPECT_EQ(pos, s.size());
    EXPECT_EQ(FindInvalidUtf8(s), std::nullopt);
  }
}

TEST(Utf8Test, FindsInvalidSequences) {
  EXPECT_EQ(FindInvalidUtf8("plain ascii text that is longer than eight bytes"), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("abc\xFF"), 3u);
  EXPECT_EQ(FindInvalidUtf8("\xC0\xAF"), 0u);          // overlong
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);      // surrogate
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("12345678\xE4\xBD"), 8u);  // truncated, after the fast path
}

// Each maximal invalid subpart becomes one U+FFFD, as Python's
// bytes.decode("utf-8", errors="replace") and Rust's from_utf8_lossy.
TEST(Utf8Test, RepairsLikePython) {
  EXPECT_EQ(ToValidUtf8("ok"), "ok");
  EXPECT_EQ(ToValidUtf8("a\xFF"
                        "b"),
            std::string("a") + kFffd + "b");
  EXPECT_EQ(ToValidUtf8("\xE4\xBD"), kFffd);  // one subpart
  EXPECT_EQ(ToValidUtf8("\xE4\xBDx\xA0"), std::string(kFffd) + "x" + kFffd);
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x99"), kFffd);
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x99\x82\x82"), std::string("\xF0\x9F\x99\x82") + kFffd);
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), std::string(kFffd) + kFffd);
  EXPECT_EQ(ToValidUtf8("\xF5\x80"), std::string(kFffd) + kFffd);
}

TEST(PropertiesTest, WhiteSpaceIsTheUnicodeProperty) {
  for (uint32_t cp : {0x9u, 0xAu, 0xBu, 0xCu, 0xDu, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au,
                      0x2028u, 0x2029u, 0x202Fu, 0x205Fu, 0x3000u}) {
    EXPECT_TRUE(IsWhiteSpace(cp)) << cp;
  }
  for (uint32_t cp : {0x8u, 0x1Cu, 0x41u, 0x180Eu, 0x200Bu, 0xFEFFu}) {
    EXPECT_FALSE(IsWhiteSpace(cp)) << cp;
  }
}

TEST(PropertiesTest, NumericAndWord) {
  EXPECT_TRUE(IsNumeric('7'));
  EXPECT_TRUE(IsNumeric(0x663));   // Arabic-Indic three (Nd)
  EXPECT_TRUE(IsNumeric(0xB2));    // superscript two (No)
  EXPECT_TRUE(IsNumeric(0x2160));  // Roman numeral one (Nl)
  EXPECT_FALSE(IsNumeric('a'));
  for (uint32_t cp : {0x61u, 0x5Au, 0x30u, 0x5Fu, 0xE9u, 0x301u, 0x4F60u, 0x24B6u, 0x200Du}) {
    EXPECT_TRUE(IsWordChar(cp)) << cp;
  }
  for (uint32_t cp : {0x20u, 0x2Du, 0x21u, 0xB2u, 0x1F642u}) EXPECT_FALSE(IsWordChar(cp)) << cp;
}

TEST(NormalizeTest, Forms) {
  EXPECT_EQ(Normalize("cafe\xCC\x81", NormalForm::kNfc), "caf\xC3\xA9");
  EXPECT_EQ(Normalize("caf\xC3\xA9", NormalForm::kNfd), "cafe\xCC\x81");
  EXPECT_EQ(Normalize("\xEF\xAC\x81 \xE2\x91\xA0", NormalForm::kNfkc), "fi 1");   // ﬁ ①
  EXPECT_EQ(Normalize("\xE2\x84\xAB", NormalForm::kNfc), "\xC3\x85");             // Å sign
  EXPECT_EQ(Normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", NormalForm::kNfc),  // jamo
            "\xEA\xB0\x81");
  EXPECT_EQ(Normalize("plain", NormalForm::kNfkd), "plain");
  EXPECT_EQ(Normalize("\xE4\xBD\xA0\xE5\xA5\xBD", NormalForm::kNfc), "\xE4\xBD\xA0\xE5\xA5\xBD");
}

// U+07FD (NKo, Unicode 11) is a combining mark for utf8proc but unknown to HF's
// normalizer: HF composes nothing across it and reorders only after it.
TEST(NormalizeTest, CharactersHfDoesNotKnowAreInert) {
  const std::string nko = Utf8(0x7FD);
  EXPECT_EQ(Normalize("a" + nko + "\xCC\x81\xCC\xA3", NormalForm::kNfc),
            "a" + nko + "\xCC\xA3\xCC\x81");
  EXPECT_EQ(Normalize("a\xCC\xA3" + nko + "\xCC\x81", NormalForm::kNfc),
            Utf8(0x1EA1) + nko + "\xCC\x81");
}

}  // namespace
}  // namespace fjord::tokenizer::internal
