// Test helper: StatusIs(code, message_matcher) on an absl::Status or
// absl::StatusOr<T> (gmock), for every package's tests.
#ifndef FJORD_RUNTIME_UTIL_STATUS_MATCHERS_H_
#define FJORD_RUNTIME_UTIL_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace fjord::status_testing {

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

}  // namespace fjord::status_testing

#endif  // FJORD_RUNTIME_UTIL_STATUS_MATCHERS_H_
