#include <torch/types.h>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "runtime/util/status_macros.h"

namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  FJORD_ASSIGN_OR_RETURN(int h, Half(x));
  FJORD_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(TorchSmokeTest, MatmulMatchesHandComputed) {
  torch::Tensor a = torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}});
  torch::Tensor b = torch::tensor({{5.0f}, {6.0f}});
  torch::Tensor c = torch::matmul(a, b);
  EXPECT_FLOAT_EQ(c[0][0].item<float>(), 17.0f);
  EXPECT_FLOAT_EQ(c[1][0].item<float>(), 39.0f);
}

TEST(StatusMacrosTest, PropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
