// Test helper for runtime/eval: StatusIs(code, message_matcher) on an
// absl::Status or absl::StatusOr<T>.
#ifndef FJORD_RUNTIME_EVAL_STATUS_MATCHERS_H_
#define FJORD_RUNTIME_EVAL_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace fjord::eval {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

}  // namespace fjord::eval

#endif  // FJORD_RUNTIME_EVAL_STATUS_MATCHERS_H_
