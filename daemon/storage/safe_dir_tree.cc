// SafeDir's walks of a whole tree: RemoveTree, List and TreeUsage, by
// descriptors only (see safe_dir.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/storage/safe_dir.h"
#include "daemon/storage/safe_dir_internal.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {
namespace {

using namespace safe_dir_internal;  // NOLINT(build/namespaces): the package's own helpers

// RemoveTree holds one open directory per level down to this depth; deeper
// directories are moved up to the top of the tree and removed in a later
// pass.
constexpr int kMaxRemoveDepth = 32;
// TreeUsage keeps the innermost this many directories of its walk open; an
// outer one is reopened as ".." of its child (and checked to be the same
// directory) when the walk returns to it.
constexpr size_t kMaxHeldDirs = 32;
// RemoveTree passes over the top directory (each one removes at least
// kMaxRemoveDepth levels of a deep chain).
constexpr int kMaxPasses = 1 << 16;

// Removes a tree below a directory by descriptors (SafeDir::RemoveTree).
class TreeRemover {
 public:
  // Removes entry `name` of directory `parent` (shown as `path`), and when it
  // is a directory, everything in it. `depth` is how many directories of the
  // tree are open above it (0: `name` is the tree's top).
  absl::Status RemoveEntry(int parent, const std::string& name, const std::string& path,
                           int depth) {
    for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
      struct stat st {};
      if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return absl::OkStatus();
        return ErrnoError(errno, "stat ", path);
      }
      if (!S_ISDIR(st.st_mode)) {
        // A link is removed, never followed.
        if (::unlinkat(parent, name.c_str(), 0) == 0 || errno == ENOENT) return absl::OkStatus();
        if (errno == EISDIR) continue;  // a directory now: again
        return ErrnoError(errno, "remove ", path);
      }
      if (depth >= kMaxRemoveDepth) {
        // Too deep to hold another descriptor: move it up to the top of the
        // tree (both held) under a fresh name; a later pass removes it.
        FJORD_ASSIGN_OR_RETURN(std::string hex, RandomHex());
        const std::string fresh = absl::StrCat(".fjord-rm-", hex);
        if (::renameat(parent, name.c_str(), top_, fresh.c_str()) == 0) {
          moved_ = true;
          return absl::OkStatus();
        }
        if (errno == ENOENT) return absl::OkStatus();
        if (errno == EEXIST || errno == ENOTEMPTY) continue;
        return ErrnoError(errno, "move ", path, " up to its tree's top");
      }
      UniqueFd dir(RetryEintr([&] {
        return ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }));
      if (!dir.valid()) {
        if (errno == ENOENT) return absl::OkStatus();
        // Swapped for a link or a file since the stat: the next round
        // unlinks whatever is there now.
        if (errno == ELOOP || errno == ENOTDIR) continue;
        return ErrnoError(errno, "open ", path);
      }
      if (depth == 0) {
        top_ = dir.get();
        int passes = 0;
        do {
          if (++passes > kMaxPasses) {
            return absl::AbortedError(
                absl::StrCat(path, " still has nested directories after ", kMaxPasses, " passes"));
          }
          moved_ = false;
          FJORD_ASSIGN_OR_RETURN(DirPtr stream, OpenStream(top_, path));
          FJORD_RETURN_IF_ERROR(Empty(std::move(stream), path, 1));
        } while (moved_);
      } else {
        DIR* d = ::fdopendir(dir.get());
        if (d == nullptr) return ErrnoError(errno, "read ", path);
        dir.release();  // the stream owns it
        FJORD_RETURN_IF_ERROR(Empty(DirPtr(d), path, depth + 1));
      }
      if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) {
        return absl::OkStatus();
      }
      // Swapped for a non-directory (the next round unlinks that), or
      // something was added meanwhile (the next round empties it again).
      if (errno == ENOTDIR || errno == ENOTEMPTY || errno == EEXIST) continue;
      return ErrnoError(errno, "remove ", path);
    }
    return absl::AbortedError(absl::StrCat(path, " kept changing while it was being removed (",
                                           kMaxAttempts, " attempts)"));
  }

 private:
  // Removes every entry of the directory `d` reads (shown as `path`).
  absl::Status Empty(DirPtr d, const std::string& path, int depth) {
    for (;;) {
      FJORD_ASSIGN_OR_RETURN(const struct dirent* e, NextEntry(d.get(), path));
      if (e == nullptr) return absl::OkStatus();
      const std::string name = e->d_name;
      FJORD_RETURN_IF_ERROR(
          RemoveEntry(::dirfd(d.get()), name, absl::StrCat(path, "/", name), depth));
    }
  }

  int top_ = -1;        // the tree's top directory (RemoveEntry at depth 0 holds it)
  bool moved_ = false;  // a directory was moved up to top_ during this pass
};

}  // namespace

absl::Status SafeDir::RemoveTree(absl::string_view name) const {
  if (!is_open()) return NotOpen();
  FJORD_RETURN_IF_ERROR(OneComponent(name, path_));
  TreeRemover remover;
  return remover.RemoveEntry(fd_.get(), std::string(name), absl::StrCat(path_, "/", name), 0);
}

absl::StatusOr<std::vector<SafeDir::Entry>> SafeDir::List(uint64_t max_entries) const {
  if (!is_open()) return NotOpen();
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadNames(fd_.get(), path_, max_entries));
  std::sort(names.begin(), names.end());
  std::vector<Entry> entries;
  entries.reserve(names.size());
  for (std::string& name : names) {
    struct stat st {};
    if (::fstatat(fd_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed since it was read
      return ErrnoError(errno, "stat ", path_, "/", name);
    }
    Entry e;
    e.name = std::move(name);
    e.type = S_ISREG(st.st_mode)   ? Entry::Type::kFile
             : S_ISDIR(st.st_mode) ? Entry::Type::kDir
             : S_ISLNK(st.st_mode) ? Entry::Type::kSymlink
                                   : Entry::Type::kOther;
    e.bytes = static_cast<uint64_t>(st.st_size);
    e.links = static_cast<uint32_t>(st.st_nlink);
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<SafeDir::Usage> SafeDir::TreeUsage(uint64_t max_entries) const {
  if (!is_open()) return NotOpen();
  // Depth first with an explicit stack. Each directory's names are read
  // whole when it is entered (at most max_entries in all), so only the
  // innermost kMaxHeldDirs directories need a descriptor; an outer one is
  // reopened as ".." of its child when the walk comes back to it, and must
  // be the same directory (device and inode) or the walk stops (Aborted: it
  // was moved while being walked).
  struct Frame {
    UniqueFd fd;
    dev_t dev = 0;
    ino_t ino = 0;
    std::string name;                // "" for the start
    std::vector<std::string> names;  // entries still to visit, last first
  };
  std::vector<Frame> stack;
  Usage usage;
  // For messages: the directory of the top frame (first and last levels
  // only when deep).
  auto top_path = [&]() {
    std::vector<absl::string_view> parts = {path_};
    for (size_t i = 1; i < stack.size(); ++i) {
      if (stack.size() > 12 && i == 5) {
        parts.push_back("...");
        i = stack.size() - 5;
      }
      parts.push_back(stack[i].name);
    }
    return absl::StrJoin(parts, "/");
  };
  // Enters directory `fd` (entry `name` of the top frame): reads its names.
  auto push = [&](UniqueFd fd, std::string name) -> absl::Status {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
      const int err = errno;
      return ErrnoError(err, "stat ", top_path());
    }
    Frame& f = stack.emplace_back();
    f.name = std::move(name);
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.fd = std::move(fd);
    absl::StatusOr<std::vector<std::string>> names =
        ReadNames(f.fd.get(), top_path(), max_entries - usage.entries);
    if (names.status().code() == absl::StatusCode::kResourceExhausted) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path_, " holds more than ", max_entries, " entries; stopped counting"));
    }
    FJORD_RETURN_IF_ERROR(names.status());
    f.names = *std::move(names);
    usage.entries += f.names.size();
    std::reverse(f.names.begin(), f.names.end());
    if (stack.size() > kMaxHeldDirs) stack[stack.size() - 1 - kMaxHeldDirs].fd.reset();
    return absl::OkStatus();
  };
  UniqueFd start(RetryEintr([&] { return ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0); }));
  if (!start.valid()) return ErrnoError(errno, "dup ", path_);
  FJORD_RETURN_IF_ERROR(push(std::move(start), ""));
  while (!stack.empty()) {
    Frame& top = stack.back();
    if (top.names.empty()) {
      if (stack.size() >= 2 && !stack[stack.size() - 2].fd.valid()) {
        Frame& parent = stack[stack.size() - 2];
        UniqueFd up(RetryEintr(
            [&] { return ::openat(top.fd.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
        struct stat st {};
        if (!up.valid() || ::fstat(up.get(), &st) != 0) {
          const int err = errno;
          return ErrnoError(err, "open ", top_path(), "/..");
        }
        if (st.st_dev != parent.dev || st.st_ino != parent.ino) {
          return absl::AbortedError(
              absl::StrCat(top_path(), " was moved while its tree was walked"));
        }
        parent.fd = std::move(up);
      }
      stack.pop_back();
      continue;
    }
    const std::string name = std::move(top.names.back());
    top.names.pop_back();
    struct stat st {};
    if (::fstatat(top.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno;
      if (err == ENOENT) continue;  // removed since it was read
      return ErrnoError(err, "stat ", top_path(), "/", name);
    }
    if (S_ISREG(st.st_mode)) usage.bytes += static_cast<uint64_t>(st.st_size);
    if (!S_ISDIR(st.st_mode)) continue;
    UniqueFd child(RetryEintr([&] {
      return ::openat(top.fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }));
    if (!child.valid()) {
      // Removed, or swapped for a link or a file, since the stat.
      const int err = errno;
      if (err == ENOENT || err == ELOOP || err == ENOTDIR) continue;
      return ErrnoError(err, "open ", top_path(), "/", name);
    }
    FJORD_RETURN_IF_ERROR(push(std::move(child), name));
  }
  return usage;
}

}  // namespace fjord::daemon
