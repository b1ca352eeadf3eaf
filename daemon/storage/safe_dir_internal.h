// Helpers shared by safe_dir.cc and safe_dir_tree.cc: errno to Status,
// path components, directory streams. Private to //daemon/storage:safe_dir.
#ifndef FJORD_DAEMON_STORAGE_SAFE_DIR_INTERNAL_H_
#define FJORD_DAEMON_STORAGE_SAFE_DIR_INTERNAL_H_

#include <dirent.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fjord::daemon::safe_dir_internal {

// How often one thing is tried again when it keeps changing under us (a
// worker swapping a directory for a link and back while RemoveTree runs, a
// temporary name taken) before giving up.
inline constexpr int kMaxAttempts = 8;

// Calls f() again while it fails with EINTR.
template <typename F>
auto RetryEintr(F f) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

// The action StrCat(what...) (naming the path it was done on) failed with
// errno `err`. Callers pass errno first and plain values after it, so that
// nothing runs between the failing call and the read of errno. The storage
// failing (read-only, full, gone away) is Unavailable or ResourceExhausted,
// as Storage reports it.
template <typename... Args>
absl::Status ErrnoError(int err, const Args&... what) {
  const std::string msg = absl::StrCat(what..., ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(absl::StrCat("storage is full: ", msg));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EROFS:
    case EIO:
    case ESTALE:
    case ENOTCONN:
      return absl::UnavailableError(absl::StrCat("storage unavailable: ", msg));
    case EAGAIN:  // a lease held by another process (O_NONBLOCK opens)
      return absl::UnavailableError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

inline absl::Status NotOpen() { return absl::FailedPreconditionError("SafeDir is not open"); }

// True for "." and "..".
bool IsDots(const char* name);
// The components of `rel` (relative to the directory named `base`):
// InvalidArgument unless it is one or more plain names separated by '/'.
absl::StatusOr<std::vector<std::string>> Components(absl::string_view rel, const std::string& base);
// Same, for exactly one component.
absl::Status OneComponent(absl::string_view name, const std::string& base);
// 16 random hex digits, for names nobody can guess in advance.
absl::StatusOr<std::string> RandomHex();

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// A directory stream of its own (a fresh open file description, so a
// reader elsewhere does not move its position) on directory `dfd`.
absl::StatusOr<DirPtr> OpenStream(int dfd, const std::string& path);
// The next entry of `d` other than "." and "..", nullptr at the end.
absl::StatusOr<const struct dirent*> NextEntry(DIR* d, const std::string& path);
// The names in directory `dfd`; ResourceExhausted once there are more than
// `limit`.
absl::StatusOr<std::vector<std::string>> ReadNames(int dfd, const std::string& path,
                                                   uint64_t limit);

}  // namespace fjord::daemon::safe_dir_internal

#endif  // FJORD_DAEMON_STORAGE_SAFE_DIR_INTERNAL_H_
