// The header parser under AddressSanitizer + UndefinedBehaviorSanitizer
// (this target compiles safetensors_header.cc itself with -fsanitize). Feeds
// the malformed corpus and a few thousand seeded random corruptions of valid
// files; every input is copied into an exactly-sized heap buffer so any read
// past its end is reported. Each parse must return (no crash), either DataLoss
// or a header whose offsets stay inside the buffer.
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/io/safetensors_header.h"
#include "runtime/io/safetensors_test_corpus.h"

namespace fjord::io {
namespace {

using ::testing::HasSubstr;

// Parses bytes held in a heap block of exactly their size. Returns the status
// code; on success checks the invariants and reads every tensor byte.
absl::StatusCode ParseExact(const std::string& bytes, const std::string& label) {
  std::unique_ptr<char[]> block(new char[bytes.size() + (bytes.empty() ? 1 : 0)]);
  std::memcpy(block.get(), bytes.data(), bytes.size());
  const absl::string_view view(block.get(), bytes.size());
  const absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(view, label);
  if (!h.ok()) {
    EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << label << ": " << h.status();
    EXPECT_THAT(std::string(h.status().message()), HasSubstr(label));
    return h.status().code();
  }
  EXPECT_LE(h->data_offset, bytes.size()) << label;
  uint64_t expected = 0;
  unsigned sum = 0;
  for (const TensorEntry& e : h->tensors) {
    EXPECT_EQ(e.begin, expected) << label;
    EXPECT_LE(e.begin, e.end) << label;
    for (uint64_t i = e.begin; i < e.end; ++i)
      sum += static_cast<unsigned char>(view[h->data_offset + i]);
    expected = e.end;
  }
  EXPECT_EQ(h->data_offset + expected, bytes.size()) << label;
  volatile unsigned sink = sum;  // keep the reads
  (void)sink;
  return absl::StatusCode::kOk;
}

std::vector<std::string> ValidSeeds() {
  std::vector<std::string> seeds;
  const std::vector<std::vector<TensorEntry>> layouts = {
      {},
      {{"w", "F32", {2, 3}, 0, 0}},
      {{"model.embed_tokens.weight", "BF16", {5, 4}, 0, 0},
       {"model.norm.weight", "F16", {4}, 0, 0},
       {"empty", "I64", {0, 3}, 0, 0},
       {"mask", "BOOL", {3}, 0, 0},
       {"q", "F8_E4M3", {2, 2}, 0, 0},
       {"packed", "F4", {4}, 0, 0}},
  };
  for (size_t i = 0; i < layouts.size(); ++i) {
    std::vector<TensorEntry> entries = layouts[i];
    std::map<std::string, std::string> meta;
    if (i > 0) meta = {{"format", "pt"}, {"step", absl::StrCat(i)}};
    const absl::StatusOr<std::string> header = EncodeSafetensorsHeader(&entries, meta);
    EXPECT_TRUE(header.ok()) << header.status();
    const uint64_t data = entries.empty() ? 0 : entries.back().end;
    seeds.push_back(*header + std::string(data, '\x5a'));
  }
  return seeds;
}

TEST(SafetensorsHeaderAsanTest, MalformedCorpusIsRefused) {
  for (const auto& c : testing::MalformedCorpus()) {
    EXPECT_EQ(ParseExact(c.bytes, "corpus:" + c.label), absl::StatusCode::kDataLoss) << c.label;
  }
}

TEST(SafetensorsHeaderAsanTest, ValidSeedsParse) {
  for (const std::string& s : ValidSeeds()) EXPECT_EQ(ParseExact(s, "seed"), absl::StatusCode::kOk);
}

// One random corruption of a valid file.
std::string Mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  static const char* const kTokens[] = {
      "{",
      "}",
      "[",
      "]",
      ",",
      ":",
      "\"",
      "-1",
      "0",
      "18446744073709551615",
      "9223372036854775807",
      "1e308",
      "null",
      "\"__metadata__\"",
      "\"F4\"",
      "\"BOOL\"",
      "\\u0000",
      "\\ud800",
      "\xff",
      "\xc0\x80",
      "\"data_offsets\"",
      "\"shape\"",
      "\"dtype\"",
  };
  switch (pick(7)) {
    case 0:  // truncate
      s.resize(pick(s.size() + 1));
      break;
    case 1:  // flip bytes
      for (uint64_t k = 0, n = 1 + pick(8); k < n && !s.empty(); ++k) {
        s[pick(s.size())] ^= static_cast<char>(1 << pick(8));
      }
      break;
    case 2: {  // random header length
      const uint64_t n = pick(3) == 0 ? rng() : pick(s.size() + 64);
      for (int i = 0; i < 8 && i < static_cast<int>(s.size()); ++i) {
        s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
      }
      break;
    }
    case 3: {  // insert a JSON-ish token inside the header
      const std::string tok = kTokens[pick(sizeof(kTokens) / sizeof(kTokens[0]))];
      s.insert(std::min<size_t>(s.size(), 8 + pick(s.size())), tok);
      break;
    }
    case 4: {  // replace a digit run with another number
      const size_t at = s.find_first_of("0123456789", 8 + pick(s.size()));
      if (at != std::string::npos) {
        const size_t end = s.find_first_not_of("0123456789", at);
        s.replace(at, end == std::string::npos ? std::string::npos : end - at,
                  absl::StrCat(pick(4) == 0 ? rng() : pick(64)));
      }
      break;
    }
    case 5:  // append or drop data bytes
      if (pick(2)) {
        s.append(pick(16), 'x');
      } else if (!s.empty()) {
        s.pop_back();
      }
      break;
    default:  // delete a byte range
      if (!s.empty()) {
        const size_t at = pick(s.size());
        s.erase(at, pick(8));
      }
      break;
  }
  return s;
}

TEST(SafetensorsHeaderAsanTest, RandomCorruptionsNeverCrash) {
  std::mt19937_64 rng(20240611);
  const std::vector<std::string> seeds = ValidSeeds();
  int ok = 0, refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = seeds[iter % seeds.size()];
    for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; ++k) s = Mutate(std::move(s), rng);
    const absl::StatusCode code = ParseExact(s, absl::StrCat("mutant#", iter));
    (code == absl::StatusCode::kOk ? ok : refused)++;
  }
  // Most corruptions are caught; a few are harmless (e.g. a flipped data byte).
  EXPECT_GT(refused, 1500);
  EXPECT_GT(ok, 0);
}

}  // namespace
}  // namespace fjord::io
