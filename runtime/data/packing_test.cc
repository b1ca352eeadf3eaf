#include "runtime/data/packing.h"

#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An example of `length` tokens with ids base, base+1, ...; every other
// target trained, last target ignored.
Example Make(int32_t length, int32_t base = 1000) {
  Example e;
  for (int32_t i = 0; i < length; ++i) e.input_ids.push_back(base + i);
  for (int32_t i = 0; i < length; ++i) {
    e.targets.push_back(i + 1 < length && i % 2 == 0 ? base + i + 1 : kIgnoreIndex);
  }
  return e;
}

std::vector<int64_t> Iota(size_t n) {
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int64_t>(i);
  return v;
}

// Checks the layout invariants of packing.h and returns the example
// sequences found in the batch, row by row.
std::vector<std::vector<int32_t>> CheckInvariants(const PackedBatch& b, int32_t pad_id) {
  std::vector<std::vector<int32_t>> found;
  EXPECT_EQ(b.input_ids.size(), static_cast<size_t>(b.batch * b.seq_len));
  int64_t trained = 0;
  for (int64_t r = 0; r < b.batch; ++r) {
    int32_t last_segment = 0;
    for (int64_t t = 0; t < b.seq_len; ++t) {
      const size_t i = r * b.seq_len + t;
      const int32_t seg = b.segment_ids[i];
      if (seg == 0) {  // padding: untrained, pad id, position 0, only at the row's end
        EXPECT_EQ(b.input_ids[i], pad_id);
        EXPECT_EQ(b.targets[i], kIgnoreIndex);
        EXPECT_EQ(b.position_ids[i], 0);
        last_segment = -1;
        continue;
      }
      EXPECT_NE(last_segment, -1) << "segment after padding at row " << r << " t " << t;
      if (seg != last_segment) {  // a new example starts: next segment id, position 0
        EXPECT_EQ(seg, last_segment + 1);
        EXPECT_EQ(b.position_ids[i], 0);
        found.emplace_back();
      } else {
        EXPECT_EQ(b.position_ids[i], b.position_ids[i - 1] + 1);
      }
      found.back().push_back(b.input_ids[i]);
      last_segment = seg;
      if (b.targets[i] != kIgnoreIndex) {
        ++trained;
        // A target is the next token of the same example, in the same row.
        EXPECT_LT(t + 1, b.seq_len);
        if (t + 1 >= b.seq_len) continue;
        EXPECT_EQ(b.segment_ids[i + 1], seg);
        EXPECT_EQ(b.targets[i], b.input_ids[i + 1]);
      }
    }
  }
  EXPECT_EQ(trained, b.trained_tokens);
  EXPECT_EQ(static_cast<int64_t>(found.size()), b.examples);
  return found;
}

TEST(PackBatchTest, FirstFitStopsAtFirstExampleThatFitsNowhere) {
  std::vector<Example> examples = {Make(5, 100), Make(2, 200), Make(3, 300), Make(1, 400)};
  PackOptions options;
  options.seq_len = 8;
  PackedBatch b;
  absl::StatusOr<int64_t> n = PackBatch(examples, Iota(4), 1, options, b);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);  // 5 + 2 fit; 3 does not
  EXPECT_THAT(b.segment_ids, ElementsAre(1, 1, 1, 1, 1, 2, 2, 0));
  EXPECT_THAT(b.position_ids, ElementsAre(0, 1, 2, 3, 4, 0, 1, 0));
  EXPECT_THAT(b.input_ids, ElementsAre(100, 101, 102, 103, 104, 200, 201, 0));
  EXPECT_THAT(b.targets, ElementsAre(101, kIgnoreIndex, 103, kIgnoreIndex, kIgnoreIndex, 201,
                                     kIgnoreIndex, kIgnoreIndex));
  EXPECT_EQ(b.trained_tokens, 3);

  // Two rows: 5 -> row 0, 2 -> row 0, 3 -> row 1, 1 -> row 0 (first fit).
  n = PackBatch(examples, Iota(4), 2, options, b);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 4);
  EXPECT_THAT(b.segment_ids, ElementsAre(1, 1, 1, 1, 1, 2, 2, 3, 1, 1, 1, 0, 0, 0, 0, 0));
  CheckInvariants(b, 0);
}

TEST(PackBatchTest, RandomExamplesKeepInvariantsAndOrder) {
  std::mt19937 rng(7);
  std::vector<Example> examples;
  for (int i = 0; i < 300; ++i) {
    examples.push_back(Make(1 + static_cast<int32_t>(rng() % 40), 1000 * (i + 1)));
  }
  for (bool packing : {true, false}) {
    PackOptions options;
    options.seq_len = 32;  // some examples are longer: truncated
    options.packing = packing;
    options.pad_id = 7;
    std::vector<int64_t> order = Iota(examples.size());
    size_t next = 0;
    int64_t truncated = 0;
    while (next < order.size()) {
      PackedBatch b;
      absl::StatusOr<int64_t> n =
          PackBatch(examples, absl::MakeConstSpan(order).subspan(next), 4, options, b);
      ASSERT_TRUE(n.ok());
      ASSERT_GE(*n, 1);
      std::vector<std::vector<int32_t>> found = CheckInvariants(b, 7);
      ASSERT_EQ(found.size(), static_cast<size_t>(*n));
      // Every consumed example is in the batch, whole or as its prefix when
      // cut, never split across rows.
      std::vector<std::vector<int32_t>> expected;
      for (int64_t k = 0; k < *n; ++k) {
        const auto& ids = examples[order[next + k]].input_ids;
        expected.emplace_back(ids.begin(),
                              ids.begin() + std::min<size_t>(ids.size(), options.seq_len));
      }
      std::sort(found.begin(), found.end());
      std::sort(expected.begin(), expected.end());
      EXPECT_EQ(found, expected);
      if (!packing) {
        EXPECT_LE(*n, 4);
      }
      truncated += b.truncated;
      next += *n;
    }
    int64_t long_ones = 0;
    for (const Example& e : examples) long_ones += e.input_ids.size() > 32;
    EXPECT_EQ(truncated, long_ones);
  }
}

TEST(PackBatchTest, TruncationCutsAndIgnoresLastTarget) {
  std::vector<Example> examples = {Make(6, 10)};
  examples[0].targets = {11, 12, 13, 14, 15, kIgnoreIndex};
  PackOptions options;
  options.seq_len = 4;
  PackedBatch b;
  ASSERT_TRUE(PackBatch(examples, Iota(1), 1, options, b).ok());
  EXPECT_THAT(b.input_ids, ElementsAre(10, 11, 12, 13));
  EXPECT_THAT(b.targets, ElementsAre(11, 12, 13, kIgnoreIndex));
  EXPECT_EQ(b.truncated, 1);

  options.truncate = false;
  absl::StatusOr<int64_t> refused = PackBatch(examples, Iota(1), 1, options, b);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("6 tokens, more than seq_len 4"));
}

TEST(PackBatchTest, NoPackingOneExamplePerRow) {
  std::vector<Example> examples = {Make(2, 10), Make(2, 20), Make(2, 30)};
  PackOptions options;
  options.seq_len = 4;
  options.packing = false;
  PackedBatch b;
  absl::StatusOr<int64_t> n = PackBatch(examples, Iota(3), 2, options, b);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_THAT(b.segment_ids, ElementsAre(1, 1, 0, 0, 1, 1, 0, 0));
  EXPECT_THAT(b.input_ids, ElementsAre(10, 11, 0, 0, 20, 21, 0, 0));
}

TEST(PackBatchTest, RejectsBadArguments) {
  std::vector<Example> examples = {Make(2)};
  PackedBatch b;
  PackOptions options;
  EXPECT_EQ(PackBatch(examples, Iota(1), 0, options, b).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.seq_len = 0;
  EXPECT_EQ(PackBatch(examples, Iota(1), 1, options, b).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.seq_len = 8;
  const std::vector<int64_t> bad = {3};
  absl::StatusOr<int64_t> n = PackBatch(examples, bad, 1, options, b);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(n.status().message(), HasSubstr("index 3 out of range"));
}

}  // namespace
}  // namespace fjord::data
