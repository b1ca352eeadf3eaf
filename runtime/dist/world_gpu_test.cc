// The NCCL path on one GPU: a world of one rank with the nccl backend (a
// process group on an in-process store) sums, broadcasts and waits on
// cuda:0 tensors, and CPU tensors are staged to the device and back. Skips
// without a CUDA device or without NCCL in this build.
#include <torch/cuda.h>
#include <torch/types.h>

#include "gtest/gtest.h"
#include "runtime/dist/world.h"

namespace fjord::dist {
namespace {

TEST(WorldGpuTest, AWorldOfOneNcclRankRunsEveryCollective) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!World::HasNccl()) GTEST_SKIP() << "this build has no NCCL";
  WorldOptions o;
  o.backend = "nccl";
  o.device = torch::Device(torch::kCUDA, 0);
  o.timeout = std::chrono::seconds(60);
  auto w = World::Join(WorldSpec{}, o);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->backend(), "nccl");
  torch::Tensor x =
      torch::arange(8, torch::TensorOptions().dtype(torch::kFloat32).device(o.device));
  ASSERT_TRUE((*w)->AllReduceSum(x, "sum").ok());
  EXPECT_TRUE(torch::equal(x.cpu(), torch::arange(8, torch::kFloat32)));
  torch::Tensor host = torch::full({3}, 2.5, torch::kFloat64);
  ASSERT_TRUE((*w)->Broadcast(host, 0, "broadcast").ok());
  EXPECT_TRUE(host.device().is_cpu());
  EXPECT_TRUE(torch::equal(host, torch::full({3}, 2.5, torch::kFloat64)));
  EXPECT_TRUE((*w)->Barrier("barrier").ok());
}

}  // namespace
}  // namespace fjord::dist
