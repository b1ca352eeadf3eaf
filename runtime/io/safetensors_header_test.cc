#include "runtime/io/safetensors_header.h"

#include <cctype>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/io/safetensors_test_corpus.h"

namespace fjord::io {
namespace {

using ::fjord::io::testing::MakeSafetensors;
using ::fjord::io::testing::MalformedCase;
using ::fjord::io::testing::MalformedCorpus;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

class MalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedTest, RefusedWithDataLossNamingFile) {
  const MalformedCase& c = GetParam();
  const absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(c.bytes, "/m/bad.safetensors");
  ASSERT_FALSE(h.ok()) << c.label;
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << c.label << ": " << h.status();
  EXPECT_THAT(std::string(h.status().message()), HasSubstr("/m/bad.safetensors")) << c.label;
  EXPECT_THAT(std::string(h.status().message()), HasSubstr(c.message)) << c.label;
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedTest, ::testing::ValuesIn(MalformedCorpus()),
                         [](const ::testing::TestParamInfo<MalformedCase>& info) {
                           std::string name;
                           for (char ch : info.param.label) {
                             name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           }
                           return name;
                         });

TEST(ParseSafetensorsHeaderTest, EmptyObjectIsAValidFile) {
  const auto h = ParseSafetensorsHeader(MakeSafetensors("{}", ""), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(h->tensors, IsEmpty());
  EXPECT_THAT(h->metadata, IsEmpty());
  EXPECT_EQ(h->data_offset, 10u);
}

TEST(ParseSafetensorsHeaderTest, ReadsEntriesSortedByOffsetWithMetadata) {
  const std::string header =
      R"({"__metadata__":{"format":"pt","note":"ünïcode"},)"
      R"("z.weight":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},)"
      R"("a.bias":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8],"extra":"ignored"},)"
      R"("empty":{"dtype":"I64","shape":[0,5],"data_offsets":[14,14]},)"
      R"("scalar":{"dtype":"U8","shape":[],"data_offsets":[14,15]}}    )";
  const auto h = ParseSafetensorsHeader(MakeSafetensors(header, std::string(15, 'x')), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 4u);
  EXPECT_EQ(h->tensors[0].name, "a.bias");
  EXPECT_EQ(h->tensors[0].dtype, "F32");
  EXPECT_THAT(h->tensors[0].shape, ElementsAre(2, 1));
  EXPECT_EQ(h->tensors[0].begin, 0u);
  EXPECT_EQ(h->tensors[0].end, 8u);
  EXPECT_EQ(h->tensors[1].name, "z.weight");
  EXPECT_EQ(h->tensors[2].name, "empty");
  EXPECT_THAT(h->tensors[2].shape, ElementsAre(0, 5));
  EXPECT_EQ(h->tensors[2].num_bytes(), 0u);
  EXPECT_EQ(h->tensors[3].name, "scalar");
  EXPECT_THAT(h->tensors[3].shape, IsEmpty());
  EXPECT_THAT(h->metadata, ElementsAre(Pair("format", "pt"), Pair("note", "ünïcode")));
  EXPECT_EQ(h->data_offset, 8 + header.size());
}

TEST(ParseSafetensorsHeaderTest, NullMetadataAndSubByteDtypes) {
  const std::string header =
      R"({"__metadata__":null,"f4":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]},)"
      R"("f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[3,6]}})";
  const auto h = ParseSafetensorsHeader(MakeSafetensors(header, "abcdef"), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors.size(), 2u);
  EXPECT_THAT(h->metadata, IsEmpty());
}

TEST(ParseSafetensorsHeaderTest, PrefixApi) {
  const std::string file = MakeSafetensors(
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, 'x'));
  const size_t header_end = file.size() - 8;
  const auto h = ParseSafetensorsHeaderPrefix(file.substr(0, header_end), file.size(), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_offset, header_end);

  const auto short_prefix = ParseSafetensorsHeaderPrefix(file.substr(0, 20), file.size(), "f");
  EXPECT_EQ(short_prefix.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(short_prefix.status().message()), HasSubstr("need the first"));
  EXPECT_EQ(ParseSafetensorsHeaderPrefix(file.substr(0, 4), file.size(), "f").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSafetensorsHeaderPrefix(file, file.size() - 1, "f").status().code(),
            absl::StatusCode::kInvalidArgument);
  // The prefix API sees the file size: data missing from a truncated file.
  const auto truncated =
      ParseSafetensorsHeaderPrefix(file.substr(0, header_end), file.size() - 1, "f");
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(truncated.status().message()),
              HasSubstr("past the end of the data buffer"));
}

TEST(ParseSafetensorsHeaderTest, EveryTruncationOfAValidFileIsRefused) {
  std::vector<TensorEntry> entries = {{"a", "F32", {3}, 0, 0}, {"b", "I64", {2, 2}, 0, 0}};
  const auto header = EncodeSafetensorsHeader(&entries, {{"format", "pt"}});
  ASSERT_TRUE(header.ok());
  const std::string file = *header + std::string(12 + 32, '\x7f');
  ASSERT_TRUE(ParseSafetensorsHeader(file, "f").ok());
  for (size_t n = 0; n < file.size(); ++n) {
    const auto h = ParseSafetensorsHeader(file.substr(0, n), "f");
    EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << "length " << n;
  }
}

TEST(ParseSafetensorsHeaderTest, ZeroSizedTensorsAtOneOffsetKeepJsonOrder) {
  const std::string header = R"({"zz":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("c":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("aa":{"dtype":"I8","shape":[0,2],"data_offsets":[0,0]}})";
  const auto h = ParseSafetensorsHeader(MakeSafetensors(header, "abcd"), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "zz");
  EXPECT_EQ(h->tensors[1].name, "aa");
  EXPECT_EQ(h->tensors[2].name, "c");
}

// Guards against quadratic parsing (a header may legally hold ~1M entries).
TEST(ParseSafetensorsHeaderTest, ManyTensors) {
  constexpr int kN = 50000;
  std::vector<TensorEntry> entries;
  entries.reserve(kN);
  for (int i = kN - 1; i >= 0; --i) {
    entries.push_back({"t" + std::to_string(i), "U8", {1}, 0, 0});
  }
  const auto header = EncodeSafetensorsHeader(&entries, {});
  ASSERT_TRUE(header.ok());
  const auto h = ParseSafetensorsHeader(*header + std::string(kN, 'x'), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), static_cast<size_t>(kN));
  EXPECT_EQ(h->tensors.front().name, "t" + std::to_string(kN - 1));
  EXPECT_EQ(h->tensors.back().name, "t0");
}

TEST(EncodeSafetensorsHeaderTest, RoundTripsThroughParse) {
  std::vector<TensorEntry> entries = {
      {"layers.0.w", "BF16", {3, 5}, 99, 99},  // stale offsets are ignored
      {"empty", "F32", {0}, 0, 0},
      {"x", "F8_E4M3", {7}, 0, 0},
      {"名前", "I64", {}, 0, 0},
  };
  const auto header = EncodeSafetensorsHeader(&entries, {{"format", "pt"}, {"step", "3"}});
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->size() % 8, 0u);
  EXPECT_EQ(entries[0].begin, 0u);
  EXPECT_EQ(entries[0].end, 30u);
  EXPECT_EQ(entries[1].begin, 30u);
  EXPECT_EQ(entries[1].end, 30u);
  EXPECT_EQ(entries[2].end, 37u);
  EXPECT_EQ(entries[3].end, 45u);
  // The JSON starts with the metadata, then tensors in the given order.
  EXPECT_EQ(header->substr(8, 15), "{\"__metadata__\"");
  EXPECT_LT(header->find("layers.0.w"), header->find("empty"));

  const auto h = ParseSafetensorsHeader(*header + std::string(45, '\0'), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(h->tensors[i].name, entries[i].name);
    EXPECT_EQ(h->tensors[i].dtype, entries[i].dtype);
    EXPECT_EQ(h->tensors[i].shape, entries[i].shape);
    EXPECT_EQ(h->tensors[i].begin, entries[i].begin);
    EXPECT_EQ(h->tensors[i].end, entries[i].end);
  }
  EXPECT_THAT(h->metadata, ElementsAre(Pair("format", "pt"), Pair("step", "3")));
  EXPECT_EQ(h->data_offset, header->size());
}

TEST(EncodeSafetensorsHeaderTest, NoMetadataOmitsTheKey) {
  std::vector<TensorEntry> entries;
  const auto header = EncodeSafetensorsHeader(&entries, {});
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->substr(8), "{}      ");
}

TEST(EncodeSafetensorsHeaderTest, RefusesBadEntries) {
  struct Bad {
    std::vector<TensorEntry> entries;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{{"a", "F32", {1}, 0, 0}, {"a", "F32", {1}, 0, 0}}, "tensor 'a' appears twice"},
      {{{"__metadata__", "F32", {1}, 0, 0}}, "reserved"},
      {{{"a", "Q8", {1}, 0, 0}}, "tensor 'a': unknown dtype \"Q8\""},
      {{{"a", "F32", {-1}, 0, 0}}, "tensor 'a': negative dimension -1"},
      {{{"a", "F32", {int64_t{1} << 62, int64_t{1} << 62}, 0, 0}}, "tensor 'a': size overflows"},
      {{{"a", "F4", {3}, 0, 0}}, "not whole bytes"},
      {{{"a\xff", "F32", {1}, 0, 0}}, "not UTF-8"},
  };
  for (const Bad& b : bad) {
    std::vector<TensorEntry> entries = b.entries;
    const auto header = EncodeSafetensorsHeader(&entries, {});
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument) << b.message;
    EXPECT_THAT(std::string(header.status().message()), HasSubstr(b.message));
  }
  std::vector<TensorEntry> none;
  EXPECT_EQ(EncodeSafetensorsHeader(&none, {{"k", "\xc3"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsDtypeBitsTest, KnownAndUnknown) {
  EXPECT_EQ(SafetensorsDtypeBits("F32"), 32);
  EXPECT_EQ(SafetensorsDtypeBits("BF16"), 16);
  EXPECT_EQ(SafetensorsDtypeBits("BOOL"), 8);
  EXPECT_EQ(SafetensorsDtypeBits("F8_E5M2"), 8);
  EXPECT_EQ(SafetensorsDtypeBits("F4"), 4);
  EXPECT_EQ(SafetensorsDtypeBits("C64"), 64);
  EXPECT_EQ(SafetensorsDtypeBits("f32"), 0);
  EXPECT_EQ(SafetensorsDtypeBits(""), 0);
}

}  // namespace
}  // namespace fjord::io
