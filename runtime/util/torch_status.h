// TorchCall: runs LibTorch code and turns its exceptions into absl::Status, for
// use at the runtime's API boundaries (LibTorch reports errors by throwing
// c10::Error from TORCH_CHECK). Header-only; needs only c10, not torch.h.
//
//   absl::StatusOr<torch::Tensor> y = TorchCall("lm_head matmul", [&] {
//     return torch::matmul(x, w);
//   });
//   absl::Status s = TorchCall("copy weights", [&] { dst.copy_(src); });
//
// Return type: f returning void or absl::Status -> absl::Status; f returning
// absl::StatusOr<T> -> absl::StatusOr<T>; f returning T -> absl::StatusOr<T>.
// Exception -> code:
//   c10::OutOfMemoryError, std::bad_alloc          -> ResourceExhausted
//   c10::ValueError, c10::TypeError, c10::IndexError,
//   std::invalid_argument, std::out_of_range,
//   std::length_error, std::domain_error           -> InvalidArgument
//   c10::NotImplementedError                       -> Unimplemented
//   any other c10::Error / std::exception          -> Internal
// The message is "<what>: <exception text without the C++ backtrace>".
#ifndef FJORD_RUNTIME_UTIL_TORCH_STATUS_H_
#define FJORD_RUNTIME_UTIL_TORCH_STATUS_H_

#include <c10/util/Exception.h>

#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fjord {
namespace torch_status_internal {

template <class T>
struct IsStatusOr : std::false_type {};
template <class T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};

template <class R>
using CallResult =
    std::conditional_t<std::is_void_v<R> || std::is_same_v<R, absl::Status>, absl::Status,
                       std::conditional_t<IsStatusOr<R>::value, R, absl::StatusOr<R>>>;

// A c10::Error message without LibTorch's C++ backtrace.
inline std::string MessageOf(const c10::Error& e) {
  std::string msg = e.what_without_backtrace();
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

}  // namespace torch_status_internal

// Converts the exception currently being handled into a Status. Call only
// inside a catch block.
inline absl::Status CurrentExceptionToStatus(absl::string_view what) {
  using torch_status_internal::MessageOf;
  try {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", MessageOf(e)));
  } catch (const c10::ValueError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", MessageOf(e)));
  } catch (const c10::TypeError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", MessageOf(e)));
  } catch (const c10::IndexError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", MessageOf(e)));
  } catch (const c10::NotImplementedError& e) {
    return absl::UnimplementedError(absl::StrCat(what, ": ", MessageOf(e)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", MessageOf(e)));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory (", e.what(), ")"));
  } catch (const std::invalid_argument& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::out_of_range& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::length_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::domain_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

// Runs f(); returns its result as a Status/StatusOr, or the Status for the
// exception it threw (see the table above).
template <class F>
auto TorchCall(absl::string_view what, F&& f)
    -> torch_status_internal::CallResult<std::invoke_result_t<F>> {
  using R = std::invoke_result_t<F>;
  try {
    if constexpr (std::is_void_v<R>) {
      std::forward<F>(f)();
      return absl::OkStatus();
    } else {
      return std::forward<F>(f)();
    }
  } catch (...) {
    return CurrentExceptionToStatus(what);
  }
}

}  // namespace fjord

#endif  // FJORD_RUNTIME_UTIL_TORCH_STATUS_H_
