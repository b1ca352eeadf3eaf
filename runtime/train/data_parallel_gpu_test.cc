// GradientReducer on cuda:0 with a world of one NCCL rank: the buckets start
// from autograd's hooks (on its device thread) during backward and the sums
// come back into .grad() on the device. Skips without a CUDA device or
// without NCCL in this build.
#include <torch/cuda.h>
#include <torch/types.h>

#include <vector>

#include "gtest/gtest.h"
#include "runtime/dist/world.h"
#include "runtime/train/data_parallel.h"

namespace fjord::train::internal {
namespace {

TEST(GradientReducerGpuTest, BucketsStartDuringBackwardOnNccl) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!dist::World::HasNccl()) GTEST_SKIP() << "this build has no NCCL";
  dist::WorldOptions o;
  o.backend = "nccl";
  o.device = torch::Device(torch::kCUDA, 0);
  o.timeout = std::chrono::seconds(60);
  auto w = dist::World::Join(dist::WorldSpec{}, o);
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<torch::Tensor> p;
  for (int64_t n : {4096, 1024, 4096}) {
    p.push_back(torch::randn({n}, torch::TensorOptions().device(o.device)).requires_grad_(true));
  }
  GradientReducer r(**w, p, 1);
  r.Arm(0);
  ((p[0] * p[0]).sum() + (p[1] * 3).sum() + (p[2] * p[2]).sum() * 2).backward();
  EXPECT_EQ(r.buckets_started_in_backward(), 3);
  ASSERT_TRUE(r.Finish(0).ok());
  EXPECT_TRUE(p[0].grad().is_cuda());
  EXPECT_TRUE(torch::allclose(p[0].grad(), p[0].detach() * 2));
  EXPECT_TRUE(torch::allclose(p[1].grad(), torch::full_like(p[1], 3.0)));
  EXPECT_TRUE(torch::allclose(p[2].grad(), p[2].detach() * 4));
}

}  // namespace
}  // namespace fjord::train::internal
