#include "runtime/util/torch_status.h"

#include <c10/util/Exception.h>

#include <new>
#include <stdexcept>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TorchCallTest, PassesValuesThrough) {
  absl::StatusOr<int> v = TorchCall("add", [] { return 1 + 2; });
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 3);
  absl::Status s = TorchCall("noop", [] {});
  EXPECT_TRUE(s.ok());
  absl::Status inner = TorchCall("status", [] { return absl::NotFoundError("x"); });
  EXPECT_EQ(inner.code(), absl::StatusCode::kNotFound);
  absl::StatusOr<int> so = TorchCall("statusor", []() -> absl::StatusOr<int> { return 7; });
  EXPECT_EQ(*so, 7);
}

TEST(TorchCallTest, TorchCheckBecomesInternalWithoutBacktrace) {
  absl::StatusOr<int> v = TorchCall("matmul of q and k", []() -> int {
    TORCH_CHECK(false, "shapes [2, 3] and [4, 5] cannot be multiplied");
    return 0;
  });
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInternal);
  const std::string msg(v.status().message());
  EXPECT_THAT(msg, HasSubstr("matmul of q and k: "));
  EXPECT_THAT(msg, HasSubstr("shapes [2, 3] and [4, 5] cannot be multiplied"));
  EXPECT_THAT(msg, Not(HasSubstr("Exception raised from")));
}

TEST(TorchCallTest, MapsSpecificErrors) {
  EXPECT_EQ(TorchCall("v", [] { TORCH_CHECK_VALUE(false, "bad value"); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TorchCall("t", [] { TORCH_CHECK_TYPE(false, "bad type"); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TorchCall("i", [] { TORCH_CHECK_INDEX(false, "bad index"); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TorchCall("n", [] { TORCH_CHECK_NOT_IMPLEMENTED(false, "nope"); }).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(TorchCall("m", [] { throw std::bad_alloc(); }).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(TorchCall("a", [] { throw std::invalid_argument("arg"); }).code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status rt = TorchCall("r", [] { throw std::runtime_error("boom"); });
  EXPECT_EQ(rt.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(rt.message(), "r: boom");
  EXPECT_EQ(TorchCall("u", [] { throw 42; }).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace fjord
