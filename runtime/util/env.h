// Env: the filesystem seam (LevelDB's Env idea). Everything in fjord that
// touches files goes through an Env so tests can swap in an in-memory Env
// (NewMemEnv) or one that injects storage faults (FaultInjectionEnv).
//
// Conventions for every method:
//  - Paths are plain strings ("/a/b/c" or relative to the working directory).
//  - Errors come back as absl::Status whose message names the operation, the
//    path and (for POSIX) the errno text, e.g.
//      "open /ckpt/model.safetensors: No such file or directory".
//    Codes follow errno: ENOENT -> NotFound, ENOSPC/EDQUOT -> ResourceExhausted,
//    EACCES/EPERM/EROFS -> PermissionDenied, EEXIST -> AlreadyExists,
//    ENOTDIR/EISDIR/ENOTEMPTY -> FailedPrecondition, others -> as
//    absl::ErrnoToStatusCode (EIO -> Unavailable, ...).
//  - Env implementations are thread-safe: methods may be called concurrently.
//    A WritableFile or SequentialFile is not: use one from one thread at a
//    time. An Env must outlive the WritableFiles and SequentialFiles it
//    opened.
#ifndef FJORD_RUNTIME_UTIL_ENV_H_
#define FJORD_RUNTIME_UTIL_ENV_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord {

// A file opened for writing (created or truncated). Not thread-safe.
// Destroying it without Close() closes it, ignoring errors.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends data at the end. A failed Append may have written a prefix.
  virtual absl::Status Append(absl::string_view data) = 0;
  // Flushes written data to stable storage (fsync).
  virtual absl::Status Sync() = 0;
  // Closes the file; further calls fail with FailedPrecondition.
  virtual absl::Status Close() = 0;
};

// A file opened for reading from its start, read in order (POSIX: read(2) on
// a descriptor, so an I/O error is a Status, never a SIGBUS as it can be for
// a mapping). Not thread-safe. Destroying it closes it.
class SequentialFile {
 public:
  virtual ~SequentialFile() = default;
  // Reads up to n bytes into buf (which holds at least n) and returns how
  // many it read: 0 only at the end of the file (or for n = 0), possibly
  // fewer than n before it. Errors name the operation and the path
  // ("read <path>: Input/output error").
  virtual absl::StatusOr<size_t> Read(char* buf, size_t n) = 0;
};

// An immutable view of a whole file's bytes. The bytes stay valid for the
// region's lifetime (share the shared_ptr to keep them alive). data() is
// nullptr when size() is 0. The POSIX region is a private (copy-on-write)
// mapping: a holder may write through const_cast'ed pointers (e.g. an in-place
// op on a zero-copy tensor) without the change ever reaching the file, but
// such writes are visible to every other user of the same region.
// Truncating the underlying file while it is mapped is undefined (SIGBUS):
// fjord only ever replaces files by rename.
class ReadOnlyRegion {
 public:
  virtual ~ReadOnlyRegion() = default;
  virtual const char* data() const = 0;
  virtual size_t size() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env. Never null, never destroyed; thread-safe.
  static Env* Default();

  // Whole file contents. NotFound if missing, FailedPrecondition if a directory.
  virtual absl::StatusOr<std::string> ReadFileToString(const std::string& path) = 0;

  // Replaces path with data atomically: writes path + ".tmp.<pid>.<n>",
  // fsyncs it, renames it over path and fsyncs the parent directory. On
  // failure the temp file is removed (best effort) and path is untouched.
  // The parent directory must exist.
  virtual absl::Status WriteFileAtomic(const std::string& path, absl::string_view data);

  // Creates (or truncates) path for writing. The parent directory must exist.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;

  // Opens path for reading from its start. NotFound if missing,
  // FailedPrecondition if a directory.
  virtual absl::StatusOr<std::unique_ptr<SequentialFile>> NewSequentialFile(
      const std::string& path) = 0;

  // rename(2): atomically replaces `to` if it exists.
  virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;

  // rename(2) of a directory: moves the directory `from`, with everything
  // below it, to `to` in one atomic step. `to` must not exist or be an empty
  // directory (which it then replaces); the parent of `to` must exist.
  // Renaming a directory onto itself is OK and changes nothing. Errors:
  // NotFound if `from` or the parent of `to` is missing; FailedPrecondition
  // if `from` is not a directory, or `to` is a file or a non-empty directory;
  // InvalidArgument if `to` lies below `from`.
  virtual absl::Status RenameDir(const std::string& from, const std::string& to) = 0;

  // True if path names an existing file or directory.
  virtual bool FileExists(const std::string& path) = 0;

  // True if path names an existing directory.
  virtual bool IsDirectory(const std::string& path) = 0;

  // mkdir -p. OK if the directory exists already; FailedPrecondition or
  // AlreadyExists if a component is a regular file.
  virtual absl::Status CreateDirs(const std::string& path) = 0;

  // mkdir(2): creates the one directory `path`, never its parents. NotFound
  // if the parent is missing, FailedPrecondition if a component of the
  // parent is a file, AlreadyExists if `path` exists (directory or file),
  // InvalidArgument for an empty path.
  virtual absl::Status CreateDir(const std::string& path) = 0;

  // Removes a file (not a directory). NotFound if missing.
  virtual absl::Status DeleteFile(const std::string& path) = 0;

  // rm -rf: removes a file or a directory tree. OK if path does not exist.
  virtual absl::Status DeleteRecursively(const std::string& path) = 0;

  // Names (not paths) of the entries of a directory, sorted, without "." and
  // "..". NotFound if missing.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;

  // fsync of a directory, making renames/creations inside it durable.
  virtual absl::Status SyncDir(const std::string& path) = 0;

  // fsync of an existing regular file named by path (POSIX: opened read-only
  // and fsynced), making its data durable whoever wrote it and however.
  // NotFound if missing, FailedPrecondition for a directory (use SyncDir).
  virtual absl::Status SyncFile(const std::string& path) = 0;

  // Size in bytes of a regular file. FailedPrecondition for a directory.
  virtual absl::StatusOr<uint64_t> FileSize(const std::string& path) = 0;

  // Maps a whole file for reading (POSIX: mmap). The region does not depend
  // on the Env staying alive.
  virtual absl::StatusOr<std::shared_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) = 0;
};

// Atomically replaces `path` with what `write` appends to a temp file: the
// streaming form of Env::WriteFileAtomic (same temp name, fsync, rename,
// directory fsync and cleanup on failure). `env` null means Env::Default().
absl::Status WriteFileAtomicWith(Env* env, const std::string& path,
                                 absl::FunctionRef<absl::Status(WritableFile*)> write);

// The temp name WriteFileAtomic uses for path: path + ".tmp.<pid>.<n>", n
// unique within the process.
std::string AtomicTempPath(const std::string& path);

// The directory holding path ("." for a bare name, "/" for "/x").
std::string ParentDir(const std::string& path);

// Joins two path pieces with exactly one '/' between them.
std::string JoinPath(absl::string_view a, absl::string_view b);

// A fresh in-memory Env (for tests). Directories are modelled: "/" and "."
// exist, CreateDirs and CreateDir make directories, and NewWritableFile
// requires the parent directory to exist, as on POSIX. MapReadOnly returns a
// snapshot copy; a SequentialFile reads the bytes of the file it opened as
// they are at each Read (a file replaced by rename or deleted afterwards keeps
// its bytes for it, like an open POSIX descriptor). RenameFile renames files
// only (Unimplemented for a directory: RenameDir moves directories). Nothing
// is ever lost to a crash here, so the syncs only check that the path exists.
// Thread-safe.
std::unique_ptr<Env> NewMemEnv();

// Wraps another Env (not owned; must outlive this) and injects storage
// faults. With no fault armed every call forwards unchanged. Faults stay
// armed until ClearFaults(). The injected status keeps the armed status's code
// and its message becomes "<op> <path>: <armed message> (injected fault)".
// Thread-safe.
class FaultInjectionEnv : public Env {
 public:
  // The operations that can be made to fail.
  enum class Op {
    kAppend,      // WritableFile::Append (see also FailWritesAfterBytes)
    kSync,        // WritableFile::Sync and SyncFile
    kClose,       // WritableFile::Close
    kOpenWrite,   // NewWritableFile
    kRename,      // RenameFile and RenameDir
    kSyncDir,     // SyncDir
    kCreateDirs,  // CreateDirs and CreateDir
    kDelete,      // DeleteFile and DeleteRecursively
    kRead,        // ReadFileToString, MapReadOnly, NewSequentialFile and
                  // each SequentialFile::Read (a failed Read reads nothing)
    kNumOps,
  };

  explicit FaultInjectionEnv(Env* base);
  ~FaultInjectionEnv() override;

  // Default armed status: the one a full disk gives.
  static absl::Status NoSpaceError();

  // After `bytes` more bytes have been appended (counted over all files of
  // this Env from now on), Append fails with `status`; the Append that
  // crosses the limit writes the bytes up to the limit first (a short write,
  // like a disk that fills up).
  void FailWritesAfterBytes(uint64_t bytes, absl::Status status = NoSpaceError());

  // Calls of `op` after the next `n` succeed fail with `status` (n = 0: the
  // very next call fails).
  void FailAfterCalls(Op op, int64_t n, absl::Status status = NoSpaceError());

  // Every later call of `op` whose path `matches` fails with `status` (a bad
  // sector, one unwritable directory); the other calls go on as before (a
  // call failed here does not count down a FailAfterCalls of the same op,
  // the others do). The path is the one the call names: the file's for
  // WritableFile and SequentialFile calls, "<from> to <to>" for a rename.
  // One predicate per op: arming again replaces it. `matches` runs under
  // this Env's lock: it must not call into this Env.
  void FailCallsIf(Op op, std::function<bool(absl::string_view path)> matches,
                   absl::Status status = NoSpaceError());

  // Shorthands for FailAfterCalls.
  void FailSyncsAfter(int64_t n, absl::Status status = NoSpaceError()) {
    FailAfterCalls(Op::kSync, n, std::move(status));
  }
  void FailRenamesAfter(int64_t n, absl::Status status = NoSpaceError()) {
    FailAfterCalls(Op::kRename, n, std::move(status));
  }

  // Disarms every fault (counters keep counting).
  void ClearFaults();

  // Calls of op made so far (failed ones included) and bytes appended
  // successfully so far.
  int64_t calls(Op op) const;
  uint64_t bytes_written() const;
  // Number of faults injected so far.
  int64_t faults_injected() const;

  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<SequentialFile>> NewSequentialFile(
      const std::string& path) override;
  absl::Status RenameFile(const std::string& from, const std::string& to) override;
  absl::Status RenameDir(const std::string& from, const std::string& to) override;
  bool FileExists(const std::string& path) override;
  bool IsDirectory(const std::string& path) override;
  absl::Status CreateDirs(const std::string& path) override;
  absl::Status CreateDir(const std::string& path) override;
  absl::Status DeleteFile(const std::string& path) override;
  absl::Status DeleteRecursively(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  absl::Status SyncDir(const std::string& path) override;
  absl::Status SyncFile(const std::string& path) override;
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override;
  absl::StatusOr<std::shared_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override;

 private:
  class File;
  class ReadFile;
  struct State;
  // OK, or the injected failure for one call of op on path.
  absl::Status Check(Op op, absl::string_view path);

  Env* base_;
  std::shared_ptr<State> state_;  // shared with open Files
};

}  // namespace fjord

#endif  // FJORD_RUNTIME_UTIL_ENV_H_
