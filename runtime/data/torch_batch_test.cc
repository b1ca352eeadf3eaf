#include "runtime/data/torch_batch.h"

#include <torch/cuda.h>
#include <torch/types.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::data {
namespace {

using ::testing::HasSubstr;

TEST(ToTorchTest, CopiesShapesAndDtypes) {
  PackedBatch b;
  b.batch = 2;
  b.seq_len = 3;
  b.input_ids = {1, 2, 3, 4, 0, 0};
  b.targets = {2, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex};
  b.position_ids = {0, 1, 0, 0, 0, 0};
  b.segment_ids = {1, 1, 2, 1, 0, 0};
  b.trained_tokens = 1;
  absl::StatusOr<TorchBatch> t = ToTorch(b);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->input_ids.sizes(), torch::IntArrayRef({2, 3}));
  EXPECT_EQ(t->input_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(t->targets.scalar_type(), torch::kInt64);
  EXPECT_EQ(t->position_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(t->segment_ids.scalar_type(), torch::kInt32);
  EXPECT_EQ(t->input_ids[1][0].item<int64_t>(), 4);
  EXPECT_EQ(t->targets[0][1].item<int64_t>(), -100);
  EXPECT_EQ(t->position_ids[0][2].item<int64_t>(), 0);
  EXPECT_EQ(t->segment_ids[0][2].item<int32_t>(), 2);
  EXPECT_EQ(t->trained_tokens, 1);
  // The tensors own their memory: the batch can go away.
  b = PackedBatch();
  EXPECT_EQ(t->input_ids.sum().item<int64_t>(), 10);
}

TEST(ToTorchTest, RejectsInconsistentBatch) {
  PackedBatch b;
  b.batch = 2;
  b.seq_len = 3;
  b.input_ids = {1, 2, 3};
  absl::StatusOr<TorchBatch> t = ToTorch(b);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("needs 6 entries"));
}

TEST(ToTorchTest, MovesToCudaWhenPresent) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  PackedBatch b;
  b.batch = 1;
  b.seq_len = 2;
  b.input_ids = {5, 6};
  b.targets = {6, kIgnoreIndex};
  b.position_ids = {0, 1};
  b.segment_ids = {1, 1};
  absl::StatusOr<TorchBatch> t = ToTorch(b, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->input_ids.is_cuda());
  EXPECT_EQ(t->targets.cpu()[0][0].item<int64_t>(), 6);
}

}  // namespace
}  // namespace fjord::data
