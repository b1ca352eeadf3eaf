// SafeDir: a directory fjordd opened without following links, and the only
// way fjordd touches anything below a directory a worker can write.
//
// fjordd runs as root; a job's directory (<root>/<tenant>/jobs/<job>/)
// belongs to the uid its workers run as, so a compromised worker can put
// anything there at any moment: a symlink to /etc/cron.d in place of
// events.jsonl, a hard link to a root-only file, a FIFO that blocks whoever
// opens it, a directory swapped for a link while it is being deleted. The
// rule (docs/security.md) is that root never resolves a path through such a
// directory. Every operation here is relative to a descriptor:
//
//  - directories are opened one component at a time with
//    O_NOFOLLOW | O_DIRECTORY relative to the one before (openat2 with
//    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the kernel has it), so a
//    symlink anywhere below the trusted start is an error, never followed;
//  - files are opened with O_NOFOLLOW | O_NONBLOCK, then checked on the
//    descriptor (fstat: no race with a swap): a regular file with exactly one
//    link, or the operation fails (FailedPrecondition naming the path and
//    why). A single link rules out a hard link to a file elsewhere on the
//    same file system (fs.protected_hardlinks may be off);
//  - removal walks descriptors (unlinkat relative to the directory that was
//    opened, never a path), so swapping a directory for a symlink while it is
//    being deleted deletes nothing outside it;
//  - ownership changes go through O_PATH | O_NOFOLLOW descriptors, so they
//    land on the inode that was checked.
//
// Error messages name the path (built from the directory's path for humans;
// paths are never used for access). Not thread-safe per object; distinct
// objects may be used from distinct threads.
#ifndef FJORD_DAEMON_STORAGE_SAFE_DIR_H_
#define FJORD_DAEMON_STORAGE_SAFE_DIR_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::daemon {

// An owned file descriptor (closed on destruction). Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

class SafeDir {
 public:
  // What List() reports of an entry (lstat: links are not followed).
  struct Entry {
    enum class Type { kFile, kDir, kSymlink, kOther };
    std::string name;
    Type type = Type::kOther;
    uint64_t bytes = 0;  // st_size
    uint32_t links = 0;  // st_nlink
    uid_t uid = 0;
    gid_t gid = 0;
  };

  SafeDir() = default;  // not open: every operation fails with FailedPrecondition
  SafeDir(SafeDir&&) = default;
  SafeDir& operator=(SafeDir&&) = default;

  // The directory at `path`, which the caller trusts (the operator's storage
  // root: links in `path` itself are followed). Unavailable when it is not
  // an accessible directory.
  static absl::StatusOr<SafeDir> OpenTrusted(const std::string& path);

  // The directory `rel` below this one. `rel` is one or more components
  // separated by '/' (no leading '/', none empty, "." or "..", no NUL); each
  // is opened without following links (openat2 with RESOLVE_BENEATH |
  // RESOLVE_NO_SYMLINKS first; where that fails for any reason, one
  // openat(O_NOFOLLOW) per component, which decides). InvalidArgument for a
  // malformed `rel`; NotFound when a component is missing
  // ("<path> does not exist"); FailedPrecondition when one is a symlink
  // ("<path> is a symbolic link; refused") or not a directory.
  absl::StatusOr<SafeDir> OpenDir(absl::string_view rel) const;

  // Creates directory `name` (one component) with `mode` (less the umask, as
  // mkdir(2)) unless it exists, then opens it as OpenDir does (an existing
  // symlink or file in its place is FailedPrecondition). The new
  // directory's owner is the caller.
  absl::StatusOr<SafeDir> MakeDir(absl::string_view name, mode_t mode) const;

  // Regular file `rel` (directories on the way opened as OpenDir) for
  // reading: O_RDONLY | O_NOFOLLOW | O_NONBLOCK, then checked on the
  // descriptor (and, so that a FIFO or device already there is never opened
  // at all, with fstatat before). NotFound when missing; FailedPrecondition
  // when it is a symlink ("is a symbolic link; refused"), not a regular file
  // ("is not a regular file; refused") or has other than one link ("has N
  // hard links; refused").
  absl::StatusOr<UniqueFd> OpenRead(absl::string_view rel) const;

  // At most `max_bytes` from the start of file `rel` (opened as OpenRead;
  // pread, so memory is bounded by min(max_bytes, size)); `size`, when not
  // null, gets the file's size (which may exceed what was read; fewer bytes
  // than min(max_bytes, size) when the file shrank meanwhile). Errors as
  // OpenRead's (`size` untouched then), and Unavailable/Internal for a
  // failed read.
  absl::StatusOr<std::string> ReadHead(absl::string_view rel, size_t max_bytes,
                                       uint64_t* size = nullptr) const;

  // The last `max_bytes` of file `rel` (all of it when smaller), opened as
  // OpenRead: a worker's 50 GB log costs max_bytes, not 50 GB.
  absl::StatusOr<std::string> ReadTail(absl::string_view rel, size_t max_bytes) const;

  // File `name` (one component) opened for appending: created with `mode`
  // (less the umask; owner the caller) when missing, O_NOFOLLOW | O_NONBLOCK (cleared after
  // the checks), then checked as OpenRead does. A symlink in its place is
  // FailedPrecondition and nothing is written anywhere.
  absl::StatusOr<UniqueFd> OpenAppend(absl::string_view name, mode_t mode) const;

  // Replaces file `name` (one component) with `data` atomically: a fresh
  // temporary ".<name>.tmp-<16 random hex digits>" (name cut to 200 bytes)
  // created O_CREAT | O_EXCL | O_NOFOLLOW, given group `gid` when set and
  // exactly `mode` (fchmod: the umask does not apply), written, fsynced,
  // renamed over `name` with renameat (a symlink at `name` is replaced,
  // never followed) and the directory fsynced. On failure the temporary is
  // removed and `name` is untouched (except when only that last fsync of
  // the directory fails: `name` is replaced then, maybe not durably).
  absl::Status WriteFileAtomic(absl::string_view name, absl::string_view data, mode_t mode,
                               std::optional<gid_t> gid = std::nullopt) const;

  // Removes entry `name` (one component) and, when it is a directory,
  // everything below it, walking descriptors: each directory is opened
  // O_NOFOLLOW | O_DIRECTORY relative to its parent's descriptor and its
  // entries removed with unlinkat relative to it; a symlink is removed,
  // never followed. Any depth: directories nested deeper than an internal
  // bound (32) are first moved up to the top of the tree (renameat between
  // held descriptors, under a fresh ".fjord-rm-<random>" name) and removed
  // in a later pass, so the number of descriptors held stays bounded.
  // Entries that vanish meanwhile are fine; OK when `name` is missing.
  // Aborted when an entry keeps changing under it (a worker swapping it
  // back and forth, or filling a directory as it is emptied): tried 8
  // times.
  absl::Status RemoveTree(absl::string_view name) const;

  // The entries of this directory (without "." and ".."), sorted by name.
  // ResourceExhausted when it holds more than `max_entries` (a directory a
  // worker can fill costs a bounded read).
  absl::StatusOr<std::vector<Entry>> List(uint64_t max_entries = UINT64_MAX) const;

  // Bytes (st_size of regular files) and entries (files, directories,
  // links, others) below this directory, walked as RemoveTree walks (links
  // counted, never followed; nested directories to any depth). Stops with
  // ResourceExhausted once more than `max_entries` were seen, so a hostile
  // tree costs a bounded walk (and memory: the names of a directory are read
  // when it is entered). The innermost 32 directories of the walk are held
  // open; an outer one is reopened as ".." of its child and must be the same
  // directory (device, inode), else Aborted (moved while walked).
  struct Usage {
    uint64_t bytes = 0;
    uint64_t entries = 0;
  };
  absl::StatusOr<Usage> TreeUsage(uint64_t max_entries) const;

  // fchown of this directory itself. nullopt keeps that id.
  absl::Status Chown(std::optional<uid_t> uid, std::optional<gid_t> gid) const;
  // chown of entry `name` (one component) without following it: opened
  // O_PATH | O_NOFOLLOW, checked on that descriptor (a non-directory with
  // more than one link — a regular file, but also a FIFO or device node — is
  // FailedPrecondition "has N hard links; refused", a symlink is left alone
  // and OK), then changed through it (AT_EMPTY_PATH). NotFound when missing.
  absl::Status ChownEntry(absl::string_view name, std::optional<uid_t> uid,
                          std::optional<gid_t> gid) const;

  // fsync of the directory (makes creations, renames and removals in it
  // durable).
  absl::Status Sync() const;

  bool is_open() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  // For messages only: never used to reach the directory.
  const std::string& path() const { return path_; }

 private:
  SafeDir(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::string path_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_STORAGE_SAFE_DIR_H_
