// GradientReducer on a world of one Gloo rank (a real c10d process group on
// an in-process store, so the asynchronous all-reduce really runs): the
// buckets are dealt in reverse parameter order and bounded in size, every
// bucket starts from autograd's hooks during the armed backward (and only
// that one), a bucket waits for the ones before it, and Finish writes the
// sums (here: the rank's own gradients) back, zeros where a parameter got
// no gradient.
#include "runtime/train/data_parallel.h"

#include <torch/types.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/dist/world.h"

namespace fjord::train::internal {
namespace {

std::unique_ptr<dist::World> WorldOfOne() {
  dist::WorldOptions o;
  o.backend = "gloo";
  o.timeout = std::chrono::seconds(30);
  auto w = dist::World::Join(dist::WorldSpec{}, o);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *std::move(w) : nullptr;
}

// Four parameters of 256, 64, 256 and 16 floats (1024, 256, 1024, 64 bytes).
std::vector<torch::Tensor> Params() {
  std::vector<torch::Tensor> p;
  for (int64_t n : {256, 64, 256, 16}) {
    p.push_back(torch::linspace(-1, 1, n, torch::kFloat32).requires_grad_(true));
  }
  return p;
}

torch::Tensor Loss(const std::vector<torch::Tensor>& p, double scale) {
  torch::Tensor l = torch::zeros({}, torch::kFloat32);
  for (size_t i = 0; i < p.size(); ++i) {
    l = l + (p[i] * p[i]).sum() * scale * static_cast<double>(i + 1);
  }
  return l;
}

TEST(GradientReducerTest, BucketsAreDealtInReverseOrderAndBoundedInSize) {
  auto world = WorldOfOne();
  ASSERT_NE(world, nullptr);
  // 1100 bytes: {p3 (64) + p2 (1024)}, {p1 (256)}, ... p1 + p0 would be 1280.
  GradientReducer r(*world, Params(), 1100);
  EXPECT_EQ(r.buckets(), 3);
  EXPECT_EQ(r.bytes_per_step(), 4 * (256 + 64 + 256 + 16));
  GradientReducer one(*world, Params(), 0);
  EXPECT_EQ(one.buckets(), 1);
  GradientReducer each(*world, Params(), 1);  // a parameter larger than a bucket: alone
  EXPECT_EQ(each.buckets(), 4);
}

TEST(GradientReducerTest, EveryBucketStartsDuringTheArmedBackwardAndTheSumsComeBack) {
  auto world = WorldOfOne();
  ASSERT_NE(world, nullptr);
  std::vector<torch::Tensor> p = Params();
  GradientReducer r(*world, p, 1);
  // Accumulation: the first backward is not watched, the second is.
  Loss(p, 1.0).backward();
  EXPECT_EQ(r.buckets_started_in_backward(), 0);
  r.Arm(0);
  Loss(p, 0.5).backward();
  EXPECT_EQ(r.buckets_started_in_backward(), 4);
  ASSERT_TRUE(r.Finish(0).ok());
  for (size_t i = 0; i < p.size(); ++i) {
    // d/dp of 1.5 (i+1) p^2 = 3 (i+1) p.
    EXPECT_TRUE(torch::allclose(p[i].grad(), p[i].detach() * 3.0 * static_cast<double>(i + 1)))
        << i;
  }
  // The next step starts clean: nothing is watched until armed again.
  for (auto& t : p) t.mutable_grad() = torch::Tensor();
  Loss(p, 1.0).backward();
  EXPECT_EQ(r.buckets_started_in_backward(), 4);
  ASSERT_TRUE(r.Finish(1).ok());
  EXPECT_TRUE(torch::allclose(p[0].grad(), p[0].detach() * 2.0));
}

TEST(GradientReducerTest, ABucketWaitsForTheOnesBeforeItAndAMissingGradientIsZeros) {
  auto world = WorldOfOne();
  ASSERT_NE(world, nullptr);
  std::vector<torch::Tensor> p = Params();
  GradientReducer r(*world, p, 1);  // buckets: p3, p2, p1, p0
  r.Arm(0);
  // p2 gets no gradient: bucket 1 never becomes ready, so buckets 2 and 3
  // (p1, p0) wait behind it; only bucket 0 (p3) starts in backward.
  ((p[0] * p[0]).sum() + (p[1] * 2).sum() + (p[3] * 3).sum()).backward();
  EXPECT_EQ(r.buckets_started_in_backward(), 1);
  ASSERT_TRUE(r.Finish(0).ok());
  ASSERT_TRUE(p[2].grad().defined());
  EXPECT_TRUE(torch::equal(p[2].grad(), torch::zeros_like(p[2])));
  EXPECT_TRUE(torch::allclose(p[0].grad(), p[0].detach() * 2.0));
  EXPECT_TRUE(torch::equal(p[1].grad(), torch::full_like(p[1], 2.0)));
  EXPECT_TRUE(torch::equal(p[3].grad(), torch::full_like(p[3], 3.0)));
}

TEST(GradientReducerTest, WithoutAnyBackwardFinishSumsWhatIsThere) {
  // A rank whose micro-batches of the step hold no trained token runs no
  // backward: its zeros still join the others' sums.
  auto world = WorldOfOne();
  ASSERT_NE(world, nullptr);
  std::vector<torch::Tensor> p = Params();
  GradientReducer r(*world, p, 1100);
  ASSERT_TRUE(r.Finish(0).ok());
  EXPECT_EQ(r.buckets_started_in_backward(), 0);
  for (const auto& t : p) EXPECT_TRUE(torch::equal(t.grad(), torch::zeros_like(t)));
}

TEST(GradientReducerTest, TheHooksLeaveWithTheReducer) {
  auto world = WorldOfOne();
  ASSERT_NE(world, nullptr);
  std::vector<torch::Tensor> p = Params();
  {
    GradientReducer r(*world, p, 1);
    r.Arm(0);
  }
  Loss(p, 1.0).backward();  // would call into the destroyed reducer
  EXPECT_TRUE(torch::allclose(p[3].grad(), p[3].detach() * 8.0));
}

}  // namespace
}  // namespace fjord::train::internal
