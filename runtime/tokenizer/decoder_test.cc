// Decoders (decoder.h); expected strings are Hugging Face tokenizers' decode
// of the same tokens.
#include "runtime/tokenizer/decoder.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using testing::ByteLevel;
using ::testing::HasSubstr;
using testing::Json;
using testing::StatusIs;

const std::string kSp = "\xE2\x96\x81";

std::string Decode(const Json& j, std::vector<std::string> tokens) {
  absl::StatusOr<std::unique_ptr<Decoder>> d = ParseDecoder(j, "decoder");
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return "";
  (*d)->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

Json Llama2Decoder() {
  return {{"type", "Sequence"},
          {"decoders",
           {{{"type", "Replace"}, {"pattern", {{"String", kSp}}}, {"content", " "}},
            {{"type", "ByteFallback"}},
            {{"type", "Fuse"}},
            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
}

TEST(DecoderTest, Llama2Chain) {
  const Json d = Llama2Decoder();
  EXPECT_EQ(Decode(d, {kSp + kSp, "a"}), " a");
  EXPECT_EQ(Decode(d, {kSp, kSp, "a"}), " a");
  EXPECT_EQ(Decode(d, {kSp + "a", kSp, "b"}), "a b");
  EXPECT_EQ(Decode(d, {"<0x41>", "a"}), "Aa");
  EXPECT_EQ(Decode(d, {"<0xC3>", "<0xA9>", "a"}),
            "\xC3\xA9"
            "a");
  // Bytes that are not UTF-8: one U+FFFD per byte.
  EXPECT_EQ(Decode(d, {"<0xC3>", "a", "<0xA9>"}),
            "\xEF\xBF\xBD"
            "a\xEF\xBF\xBD");
  EXPECT_EQ(Decode(d, {"<0xc3>", "<0xa9>"}), "\xC3\xA9");  // lowercase hex too
  EXPECT_EQ(Decode(d, {"a" + kSp, "a" + kSp}), "a a ");
}

TEST(DecoderTest, Metaspace) {
  auto meta = [](const std::string& scheme) {
    return Json{
        {"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", scheme}, {"split", true}};
  };
  // HF drops every "▁" of the first token unless the scheme is never.
  EXPECT_EQ(Decode(meta("first"), {kSp + kSp, "a"}), "a");
  EXPECT_EQ(Decode(meta("always"), {kSp, kSp, "a"}), " a");
  EXPECT_EQ(Decode(meta("first"), {kSp + "a", kSp, "b"}), "a b");
  EXPECT_EQ(Decode(meta("never"), {kSp + kSp, "a"}), "  a");
  EXPECT_EQ(Decode(meta("first"), {"<0x41>", "a"}), "<0x41>a");
  EXPECT_EQ(Decode(Json{{"type", "Metaspace"}, {"replacement", kSp}, {"add_prefix_space", false}},
                   {kSp + "a"}),
            " a");
}

TEST(DecoderTest, ByteLevel) {
  const Json d = {{"type", "ByteLevel"}};
  EXPECT_EQ(Decode(d, {ByteLevel("Hello"), ByteLevel(" w\xC3\xA9")}), "Hello w\xC3\xA9");
  // A token with characters outside the alphabet keeps its bytes.
  EXPECT_EQ(Decode(d, {"x", " caf\xC3\xA9"}), "x caf\xC3\xA9");
  // "é" (U+00E9) is in the alphabet: byte 0xE9 alone, not UTF-8.
  EXPECT_EQ(Decode(d, {"a", "\xC3\xA9"}), "a\xEF\xBF\xBD");
  EXPECT_EQ(Decode(d, {ByteLevel("\xF0\x9F"), ByteLevel("\x99\x82")}), "\xF0\x9F\x99\x82");
}

TEST(DecoderTest, ReplaceStripBpe) {
  EXPECT_EQ(Decode({{"type", "Sequence"},
                    {"decoders",
                     {{{"type", "Replace"}, {"pattern", {{"Regex", "a+"}}}, {"content", "X"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 0}, {"stop", 2}}}}},
                   {"aa", "a", kSp, "b  ", " "}),
            "XX" + kSp + "b");
  EXPECT_EQ(
      Decode({{"type", "Strip"}, {"content", " "}, {"start", 3}, {"stop", 3}}, {" ", "  x  "}),
      "x");
  EXPECT_EQ(Decode({{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"hel", "lo</w>", "you</w>"}),
            "hello you");
}

TEST(DecoderTest, Errors) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(ParseDecoder({{"type", "CTC"}}, "decoder"),
              StatusIs(kInvalid, HasSubstr("decoder.type: unsupported decoder \"CTC\"")));
  EXPECT_THAT(ParseDecoder({{"type", "Strip"}, {"content", "ab"}}, "d"),
              StatusIs(kInvalid, "d.content: expected a single character, got \"ab\""));
  EXPECT_THAT(ParseDecoder({{"type", "Strip"}, {"content", " "}, {"start", -1}}, "d"),
              StatusIs(kInvalid, HasSubstr("d.start: -1 is out of range")));
  EXPECT_THAT(
      ParseDecoder({{"type", "Sequence"}, {"decoders", {{{"type", "Fuse"}}, {{"a", 1}}}}}, "d"),
      StatusIs(kInvalid, "d.decoders[1].type: missing"));
  EXPECT_THAT(ParseDecoder({{"type", "Replace"}, {"pattern", {{"String", "x"}}}}, "d"),
              StatusIs(kInvalid, "d.content: missing"));
}

}  // namespace
}  // namespace fjord::tokenizer::internal
