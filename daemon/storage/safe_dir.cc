#include "daemon/storage/safe_dir.h"
#include "daemon/storage/safe_dir_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {
namespace safe_dir_internal {

bool IsDots(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

// The components of `rel` (relative to the directory named `base`):
// InvalidArgument unless it is one or more plain names separated by '/'.
absl::StatusOr<std::vector<std::string>> Components(absl::string_view rel,
                                                    const std::string& base) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("'", rel, "' below ", base, " ", why,
                                                   "; only plain names below it are allowed"));
  };
  if (rel.empty()) return bad("is empty");
  if (rel.find('\0') != absl::string_view::npos) return bad("contains NUL");
  if (rel.front() == '/') return bad("is an absolute path");
  std::vector<std::string> parts = absl::StrSplit(rel, '/');
  for (const std::string& p : parts) {
    if (p.empty()) return bad("has an empty component");
    if (p == "." || p == "..") return bad("has a '.' or '..' component");
  }
  return parts;
}

// Same, for exactly one component.
absl::Status OneComponent(absl::string_view name, const std::string& base) {
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(name, base));
  if (parts.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' below ", base, " is not a single name"));
  }
  return absl::OkStatus();
}

// 16 random hex digits, for names nobody can guess in advance.
absl::StatusOr<std::string> RandomHex() {
  char bytes[8];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t r = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "getrandom");
    }
    got += static_cast<size_t>(r);
  }
  return absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes)));
}

// A directory stream of its own (a fresh open file description, so a
// reader elsewhere does not move its position) on directory `dfd`.
absl::StatusOr<DirPtr> OpenStream(int dfd, const std::string& path) {
  UniqueFd own(RetryEintr([&] { return ::openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  if (!own.valid()) return ErrnoError(errno, "open ", path);
  DIR* d = ::fdopendir(own.get());
  if (d == nullptr) return ErrnoError(errno, "read ", path);
  own.release();  // the stream owns it
  return DirPtr(d);
}

// The next entry of `d` other than "." and "..", nullptr at the end.
absl::StatusOr<const struct dirent*> NextEntry(DIR* d, const std::string& path) {
  for (;;) {
    errno = 0;
    const struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) return ErrnoError(errno, "read ", path);
      return nullptr;
    }
    if (!IsDots(e->d_name)) return e;
  }
}

// The names in directory `dfd`; ResourceExhausted once there are more than
// `limit`.
absl::StatusOr<std::vector<std::string>> ReadNames(int dfd, const std::string& path,
                                                   uint64_t limit) {
  FJORD_ASSIGN_OR_RETURN(DirPtr d, OpenStream(dfd, path));
  std::vector<std::string> names;
  for (;;) {
    FJORD_ASSIGN_OR_RETURN(const struct dirent* e, NextEntry(d.get(), path));
    if (e == nullptr) return names;
    if (names.size() >= limit) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path, " has more than ", limit, " entries; stopped counting"));
    }
    names.emplace_back(e->d_name);
  }
}

}  // namespace safe_dir_internal

namespace {

using namespace safe_dir_internal;  // NOLINT(build/namespaces): this file's own helpers

// OK for a regular file with exactly one link, else FailedPrecondition
// naming `path` and what it is.
absl::Status CheckPlainFile(const struct stat& st, const std::string& path) {
  if (S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is a symbolic link; refused"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file; refused"));
  }
  if (st.st_nlink != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has ", st.st_nlink, " hard links; refused"));
  }
  return absl::OkStatus();
}

// Why directory `name` of `parent` (shown as `path`) could not be opened.
absl::Status DirOpenError(int parent, const std::string& name, const std::string& path, int err) {
  if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  if (err == ELOOP || err == ENOTDIR) {
    struct stat st {};
    if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is a symbolic link; refused"));
    }
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a directory"));
  }
  return ErrnoError(err, "open ", path);
}

// Opens file `name` of directory `dfd` (shown as `path`) with `flags` (plus
// O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) and checks it is a plain file: first
// with fstatat, so that a FIFO or device already in its place is never
// opened, then on the descriptor, which no swap can change. `st` gets the
// descriptor's fstat.
absl::StatusOr<UniqueFd> OpenPlainFileAt(int dfd, const std::string& name, const std::string& path,
                                         int flags, mode_t mode, struct stat* st) {
  if (::fstatat(dfd, name.c_str(), st, AT_SYMLINK_NOFOLLOW) == 0) {
    FJORD_RETURN_IF_ERROR(CheckPlainFile(*st, path));
  } else if (errno == ENOENT) {
    if ((flags & O_CREAT) == 0) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  } else {
    return ErrnoError(errno, "stat ", path);
  }
  UniqueFd fd(RetryEintr([&] {
    return ::openat(dfd, name.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
  }));
  if (!fd.valid()) {
    switch (errno) {
      case ELOOP:
        return absl::FailedPreconditionError(absl::StrCat(path, " is a symbolic link; refused"));
      case ENXIO:   // a FIFO without a reader, a socket
      case EISDIR:  // a directory opened for writing
        return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file; refused"));
      case ENOENT:
        return absl::NotFoundError(absl::StrCat(path, " does not exist"));
      default:
        return ErrnoError(errno, "open ", path);
    }
  }
  if (::fstat(fd.get(), st) != 0) return ErrnoError(errno, "stat ", path);
  FJORD_RETURN_IF_ERROR(CheckPlainFile(*st, path));
  return fd;
}

// Regular file `rel` below `dir` for reading (directories on the way opened
// with OpenDir).
absl::StatusOr<UniqueFd> OpenReadBelow(const SafeDir& dir, absl::string_view rel, struct stat* st) {
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(rel, dir.path()));
  const std::string path = absl::StrCat(dir.path(), "/", rel);
  if (parts.size() == 1) return OpenPlainFileAt(dir.fd(), parts[0], path, O_RDONLY, 0, st);
  FJORD_ASSIGN_OR_RETURN(SafeDir parent, dir.OpenDir(rel.substr(0, rel.rfind('/'))));
  return OpenPlainFileAt(parent.fd(), parts.back(), path, O_RDONLY, 0, st);
}

// Up to `n` bytes of `fd` from `offset` (fewer at end of file).
absl::StatusOr<std::string> PreadUpTo(int fd, uint64_t offset, size_t n, const std::string& path) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = RetryEintr(
        [&] { return ::pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got)); });
    if (r < 0) return ErrnoError(errno, "read ", path);
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);  // not retried on EINTR: the descriptor is gone either way
  fd_ = fd;
}

absl::StatusOr<SafeDir> SafeDir::OpenTrusted(const std::string& path) {
  UniqueFd fd(RetryEintr([&] { return ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  if (!fd.valid()) {
    return absl::UnavailableError(
        absl::StrCat(path, " is not an accessible directory: ", std::strerror(errno)));
  }
  return SafeDir(std::move(fd), path);
}

// openat2 resolves the whole of `rel` in one call, refusing every symlink
// and anything that would leave this directory. Where it fails for any
// reason (ENOSYS before Linux 5.6, EPERM under a seccomp filter, a refused
// link, a missing component) the component walk below runs and decides: it
// alone is correct, openat2 only saves its syscalls, and it names the
// component that is wrong.
absl::StatusOr<SafeDir> SafeDir::OpenDir(absl::string_view rel) const {
  if (!is_open()) return NotOpen();
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> parts, Components(rel, path_));
  const std::string full = absl::StrCat(path_, "/", rel);
#ifdef SYS_openat2
  struct open_how how {};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const std::string rel_z(rel);
  UniqueFd fast(RetryEintr([&] {
    return static_cast<int>(::syscall(SYS_openat2, fd_.get(), rel_z.c_str(), &how, sizeof(how)));
  }));
  if (fast.valid()) return SafeDir(std::move(fast), full);
#endif
  UniqueFd cur;
  int at = fd_.get();
  std::string path = path_;
  for (const std::string& p : parts) {
    path = absl::StrCat(path, "/", p);
    UniqueFd next(RetryEintr(
        [&] { return ::openat(at, p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
    if (!next.valid()) return DirOpenError(at, p, path, errno);
    cur = std::move(next);
    at = cur.get();
  }
  return SafeDir(std::move(cur), full);
}

absl::StatusOr<SafeDir> SafeDir::MakeDir(absl::string_view name, mode_t mode) const {
  if (!is_open()) return NotOpen();
  FJORD_RETURN_IF_ERROR(OneComponent(name, path_));
  const std::string name_z(name);
  if (::mkdirat(fd_.get(), name_z.c_str(), mode) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "mkdir ", path_, "/", name);
  }
  return OpenDir(name);
}

absl::StatusOr<UniqueFd> SafeDir::OpenRead(absl::string_view rel) const {
  if (!is_open()) return NotOpen();
  struct stat st {};
  return OpenReadBelow(*this, rel, &st);
}

absl::StatusOr<std::string> SafeDir::ReadHead(absl::string_view rel, size_t max_bytes,
                                              uint64_t* size) const {
  if (!is_open()) return NotOpen();
  struct stat st {};
  FJORD_ASSIGN_OR_RETURN(UniqueFd fd, OpenReadBelow(*this, rel, &st));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (size != nullptr) *size = file_size;
  return PreadUpTo(fd.get(), 0, static_cast<size_t>(std::min<uint64_t>(file_size, max_bytes)),
                   absl::StrCat(path_, "/", rel));
}

absl::StatusOr<std::string> SafeDir::ReadTail(absl::string_view rel, size_t max_bytes) const {
  if (!is_open()) return NotOpen();
  struct stat st {};
  FJORD_ASSIGN_OR_RETURN(UniqueFd fd, OpenReadBelow(*this, rel, &st));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  const uint64_t n = std::min<uint64_t>(file_size, max_bytes);
  return PreadUpTo(fd.get(), file_size - n, static_cast<size_t>(n), absl::StrCat(path_, "/", rel));
}

absl::StatusOr<UniqueFd> SafeDir::OpenAppend(absl::string_view name, mode_t mode) const {
  if (!is_open()) return NotOpen();
  FJORD_RETURN_IF_ERROR(OneComponent(name, path_));
  const std::string path = absl::StrCat(path_, "/", name);
  struct stat st {};
  FJORD_ASSIGN_OR_RETURN(UniqueFd fd, OpenPlainFileAt(fd_.get(), std::string(name), path,
                                                      O_WRONLY | O_APPEND | O_CREAT, mode, &st));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return ErrnoError(errno, "fcntl ", path);
  }
  return fd;
}

absl::Status SafeDir::WriteFileAtomic(absl::string_view name, absl::string_view data, mode_t mode,
                                      std::optional<gid_t> gid) const {
  if (!is_open()) return NotOpen();
  FJORD_RETURN_IF_ERROR(OneComponent(name, path_));
  const std::string target = absl::StrCat(path_, "/", name);
  // A name of up to 255 bytes still leaves room for the suffix.
  std::string tmp;
  UniqueFd fd;
  for (int attempt = 0; attempt < kMaxAttempts && !fd.valid(); ++attempt) {
    FJORD_ASSIGN_OR_RETURN(std::string hex, RandomHex());
    tmp = absl::StrCat(".", name.substr(0, 200), ".tmp-", hex);
    fd.reset(RetryEintr([&] {
      return ::openat(fd_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      0600);
    }));
    if (!fd.valid() && errno != EEXIST) {
      return ErrnoError(errno, "create ", path_, "/", tmp);
    }
  }
  if (!fd.valid()) {
    return absl::InternalError(absl::StrCat("no fresh temporary name for ", target));
  }
  const std::string tmp_path = absl::StrCat(path_, "/", tmp);
  // Removes the temporary; `what` failed with `err`.
  auto fail = [&](int err, const auto&... what) {
    fd.reset();
    ::unlinkat(fd_.get(), tmp.c_str(), 0);
    return ErrnoError(err, what...);
  };
  if (gid.has_value() && ::fchown(fd.get(), static_cast<uid_t>(-1), *gid) != 0) {
    return fail(errno, "chown ", tmp_path);
  }
  if (::fchmod(fd.get(), mode) != 0) return fail(errno, "chmod ", tmp_path);
  for (size_t done = 0; done < data.size();) {
    const ssize_t r =
        RetryEintr([&] { return ::write(fd.get(), data.data() + done, data.size() - done); });
    if (r < 0) return fail(errno, "write ", tmp_path);
    done += static_cast<size_t>(r);
  }
  if (RetryEintr([&] { return ::fsync(fd.get()); }) != 0) {
    return fail(errno, "fsync ", tmp_path);
  }
  if (::close(fd.release()) != 0 && errno != EINTR) {
    return fail(errno, "close ", tmp_path);
  }
  const std::string name_z(name);
  if (::renameat(fd_.get(), tmp.c_str(), fd_.get(), name_z.c_str()) != 0) {
    return fail(errno, "rename ", tmp_path, " to ", target);
  }
  return Sync();
}

absl::Status SafeDir::Chown(std::optional<uid_t> uid, std::optional<gid_t> gid) const {
  if (!is_open()) return NotOpen();
  if (::fchown(fd_.get(), uid.value_or(static_cast<uid_t>(-1)),
               gid.value_or(static_cast<gid_t>(-1))) != 0) {
    return ErrnoError(errno, "chown ", path_);
  }
  return absl::OkStatus();
}

absl::Status SafeDir::ChownEntry(absl::string_view name, std::optional<uid_t> uid,
                                 std::optional<gid_t> gid) const {
  if (!is_open()) return NotOpen();
  FJORD_RETURN_IF_ERROR(OneComponent(name, path_));
  const std::string path = absl::StrCat(path_, "/", name);
  const std::string name_z(name);
  UniqueFd fd(RetryEintr(
      [&] { return ::openat(fd_.get(), name_z.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC); }));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return ErrnoError(errno, "open ", path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat ", path);
  if (S_ISLNK(st.st_mode)) return absl::OkStatus();  // neither followed nor changed
  // Not only regular files: a hard link to a device node or a FIFO
  // elsewhere must not change hands either.
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has ", st.st_nlink, " hard links; refused"));
  }
  if (::fchownat(fd.get(), "", uid.value_or(static_cast<uid_t>(-1)),
                 gid.value_or(static_cast<gid_t>(-1)), AT_EMPTY_PATH) != 0) {
    return ErrnoError(errno, "chown ", path);
  }
  return absl::OkStatus();
}

absl::Status SafeDir::Sync() const {
  if (!is_open()) return NotOpen();
  if (RetryEintr([&] { return ::fsync(fd_.get()); }) != 0) {
    return ErrnoError(errno, "fsync ", path_);
  }
  return absl::OkStatus();
}

}  // namespace fjord::daemon
