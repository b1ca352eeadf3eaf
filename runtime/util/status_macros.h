// Status propagation macros. Debian's Abseil (20220623) ships none, so fjord
// defines them once here. Header-only; depends on Abseil alone, so the daemon
// and SDK use it too.
#ifndef FJORD_RUNTIME_UTIL_STATUS_MACROS_H_
#define FJORD_RUNTIME_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FJORD_STATUS_CONCAT_INNER_(x, y) x##y
#define FJORD_STATUS_CONCAT_(x, y) FJORD_STATUS_CONCAT_INNER_(x, y)

// Returns from the current function with the status of `expr` if not OK.
#define FJORD_RETURN_IF_ERROR(expr)                \
  do {                                             \
    const ::absl::Status fjord_status_ = (expr);   \
    if (!fjord_status_.ok()) return fjord_status_; \
  } while (0)

// FJORD_ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (a StatusOr<T>); on
// error returns its status, else moves the value into `lhs` (which may be a
// declaration, e.g. `auto x`).
#define FJORD_ASSIGN_OR_RETURN(lhs, expr) \
  FJORD_ASSIGN_OR_RETURN_IMPL_(FJORD_STATUS_CONCAT_(fjord_statusor_, __LINE__), lhs, expr)

#define FJORD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)  \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // FJORD_RUNTIME_UTIL_STATUS_MACROS_H_
