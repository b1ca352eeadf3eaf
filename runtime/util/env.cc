#include "runtime/util/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord {
namespace {

// Status for a failed syscall: "<what> <path>: <strerror>".
absl::Status ErrnoStatus(int err, absl::string_view what, absl::string_view path) {
  const std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case ENOTDIR:
    case EISDIR:
    case ENOTEMPTY:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::Status(absl::ErrnoToStatusCode(err), msg);
  }
}

absl::Status ErrnoStatus(absl::string_view what, absl::string_view path) {
  return ErrnoStatus(errno, what, path);
}

// Closes a file descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// ---------------------------------------------------------------- POSIX

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Append(absl::string_view data) override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("write ", path_, ": closed"));
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("write", path_);
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("fsync ", path_, ": closed"));
    if (::fsync(fd_) != 0) return ErrnoStatus("fsync", path_);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("close ", path_, ": closed"));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return ErrnoStatus("close", path_);
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int fd_;
};

class PosixSequentialFile : public SequentialFile {
 public:
  PosixSequentialFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixSequentialFile() override { ::close(fd_); }

  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    while (true) {
      const ssize_t got = ::read(fd_, buf, n);
      if (got >= 0) return static_cast<size_t>(got);
      if (errno != EINTR) return ErrnoStatus("read", path_);
    }
  }

 private:
  std::string path_;
  int fd_;
};

class MmapRegion : public ReadOnlyRegion {
 public:
  MmapRegion(void* base, size_t size) : base_(base), size_(size) {}
  ~MmapRegion() override {
    if (base_ != nullptr) ::munmap(base_, size_);
  }
  const char* data() const override { return static_cast<const char*>(base_); }
  size_t size() const override { return size_; }

 private:
  void* base_;
  size_t size_;
};

class PosixEnv : public Env {
 public:
  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path);
    FdCloser closer(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoStatus("stat", path);
    if (S_ISDIR(st.st_mode)) return ErrnoStatus(EISDIR, "read", path);
    std::string out;
    if (S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
    char buf[1 << 16];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("read", path);
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus("open for writing", path);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  absl::StatusOr<std::unique_ptr<SequentialFile>> NewSequentialFile(
      const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path);
    std::unique_ptr<SequentialFile> file(new PosixSequentialFile(path, fd));  // owns fd
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoStatus("stat", path);
    if (S_ISDIR(st.st_mode)) return ErrnoStatus(EISDIR, "read", path);
    return file;
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("rename ", from, " to"), to);
    }
    return absl::OkStatus();
  }

  absl::Status RenameDir(const std::string& from, const std::string& to) override {
    const std::string what = absl::StrCat("rename ", from, " to");
    struct stat st;
    if (::lstat(from.c_str(), &st) != 0) return ErrnoStatus(what, to);
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " ", to, ": ", from, " is not a directory"));
    }
    if (::rename(from.c_str(), to.c_str()) != 0) {
      // POSIX allows EEXIST or ENOTEMPTY for a non-empty target directory.
      return ErrnoStatus(errno == EEXIST ? ENOTEMPTY : errno, what, to);
    }
    return absl::OkStatus();
  }

  bool FileExists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  absl::Status CreateDirs(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("mkdir: empty path");
    // Walk the prefixes; create each one that is missing.
    size_t pos = 0;
    while (pos != std::string::npos) {
      pos = path.find('/', pos + 1);
      const std::string prefix = path.substr(0, pos);
      if (prefix.empty()) continue;
      if (::mkdir(prefix.c_str(), 0755) == 0) continue;
      const int err = errno;
      if (err == EEXIST) {
        struct stat st;
        if (::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
        return ErrnoStatus(ENOTDIR, "mkdir", prefix);
      }
      return ErrnoStatus(err, "mkdir", prefix);
    }
    return absl::OkStatus();
  }

  absl::Status CreateDir(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("mkdir: empty path");
    if (::mkdir(path.c_str(), 0755) != 0) return ErrnoStatus("mkdir", path);
    return absl::OkStatus();
  }

  absl::Status DeleteFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoStatus("unlink", path);
    return absl::OkStatus();
  }

  absl::Status DeleteRecursively(const std::string& path) override {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return ErrnoStatus("stat", path);
    }
    if (!S_ISDIR(st.st_mode)) return DeleteFile(path);
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoStatus("opendir", path);
    std::vector<std::string> children;
    errno = 0;
    while (struct dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") children.push_back(name);
    }
    ::closedir(dir);
    for (const std::string& child : children) {
      FJORD_RETURN_IF_ERROR(DeleteRecursively(JoinPath(path, child)));
    }
    if (::rmdir(path.c_str()) != 0) return ErrnoStatus("rmdir", path);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoStatus("opendir", path);
    std::vector<std::string> out;
    errno = 0;
    struct dirent* e;
    while ((e = ::readdir(dir)) != nullptr) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") out.push_back(name);
    }
    const int err = errno;
    ::closedir(dir);
    if (err != 0) return ErrnoStatus(err, "readdir", path);
    std::sort(out.begin(), out.end());
    return out;
  }

  absl::Status SyncDir(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open directory", path);
    FdCloser closer(fd);
    if (::fsync(fd) != 0) return ErrnoStatus("fsync directory", path);
    return absl::OkStatus();
  }

  absl::Status SyncFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path);
    FdCloser closer(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoStatus("stat", path);
    if (S_ISDIR(st.st_mode)) return ErrnoStatus(EISDIR, "fsync", path);
    if (::fsync(fd) != 0) return ErrnoStatus("fsync", path);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path);
    if (S_ISDIR(st.st_mode)) return ErrnoStatus(EISDIR, "size of", path);
    return static_cast<uint64_t>(st.st_size);
  }

  absl::StatusOr<std::shared_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path);
    FdCloser closer(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoStatus("stat", path);
    if (S_ISDIR(st.st_mode)) return ErrnoStatus(EISDIR, "mmap", path);
    if (!S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("mmap ", path, ": not a regular file"));
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) return std::shared_ptr<ReadOnlyRegion>(new MmapRegion(nullptr, 0));
    // Private and writable: copy-on-write pages, so in-place ops on zero-copy
    // tensors never fault and never reach the file.
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) return ErrnoStatus("mmap", path);
    return std::shared_ptr<ReadOnlyRegion>(new MmapRegion(base, size));
  }
};

// ---------------------------------------------------------------- memory

// Removes a leading "./", trailing slashes and repeated slashes; "" stays "".
std::string NormalizePath(absl::string_view path) {
  while (path.size() > 2 && path.substr(0, 2) == "./") path.remove_prefix(2);
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

class StringRegion : public ReadOnlyRegion {
 public:
  explicit StringRegion(std::string bytes) : bytes_(std::move(bytes)) {}
  const char* data() const override { return bytes_.empty() ? nullptr : bytes_.data(); }
  size_t size() const override { return bytes_.size(); }

 private:
  std::string bytes_;
};

class MemEnv : public Env {
 public:
  MemEnv() {
    dirs_.insert("/");
    dirs_.insert(".");
  }

  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (dirs_.count(p)) return ErrnoStatus(EISDIR, "read", path);
    auto it = files_.find(p);
    if (it == files_.end()) return ErrnoStatus(ENOENT, "open", path);
    return *it->second;
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (dirs_.count(p)) return ErrnoStatus(EISDIR, "open for writing", path);
    if (!DirExistsLocked(ParentDir(p))) return ErrnoStatus(ENOENT, "open for writing", path);
    auto contents = std::make_shared<std::string>();
    files_[p] = contents;
    return std::unique_ptr<WritableFile>(new File(this, path, std::move(contents)));
  }

  absl::StatusOr<std::unique_ptr<SequentialFile>> NewSequentialFile(
      const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (dirs_.count(p)) return ErrnoStatus(EISDIR, "read", path);
    auto it = files_.find(p);
    if (it == files_.end()) return ErrnoStatus(ENOENT, "open", path);
    return std::unique_ptr<SequentialFile>(new ReadFile(this, it->second));
  }

  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string f = NormalizePath(from), t = NormalizePath(to);
    auto it = files_.find(f);
    if (it == files_.end()) {
      if (dirs_.count(f)) {
        return absl::UnimplementedError(absl::StrCat(
            "rename ", from, ": MemEnv::RenameFile renames files only (use RenameDir)"));
      }
      return ErrnoStatus(ENOENT, absl::StrCat("rename ", from, " to"), to);
    }
    if (dirs_.count(t)) return ErrnoStatus(EISDIR, absl::StrCat("rename ", from, " to"), to);
    if (!DirExistsLocked(ParentDir(t)))
      return ErrnoStatus(ENOENT, absl::StrCat("rename ", from, " to"), to);
    auto contents = it->second;
    files_.erase(it);
    files_[t] = std::move(contents);
    return absl::OkStatus();
  }

  absl::Status RenameDir(const std::string& from, const std::string& to) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string f = NormalizePath(from), t = NormalizePath(to);
    const std::string what = absl::StrCat("rename ", from, " to");
    if (!dirs_.count(f)) {
      if (files_.count(f)) {
        return absl::FailedPreconditionError(
            absl::StrCat(what, " ", to, ": ", from, " is not a directory"));
      }
      return ErrnoStatus(ENOENT, what, to);
    }
    if (f == t) return absl::OkStatus();
    if (f == "/" || f == "." || IsBelow(t, f)) return ErrnoStatus(EINVAL, what, to);
    if (files_.count(t)) return ErrnoStatus(ENOTDIR, what, to);
    if (dirs_.count(t) && HasChildrenLocked(t)) return ErrnoStatus(ENOTEMPTY, what, to);
    const std::string parent = ParentDir(t);
    if (!dirs_.count(parent)) return ErrnoStatus(files_.count(parent) ? ENOTDIR : ENOENT, what, to);
    // Move every file and directory at or below f to the same place below t.
    std::map<std::string, std::shared_ptr<std::string>> moved_files;
    for (auto it = files_.begin(); it != files_.end();) {
      if (IsBelow(it->first, f)) {
        moved_files[t + it->first.substr(f.size())] = std::move(it->second);
        it = files_.erase(it);
      } else {
        ++it;
      }
    }
    std::set<std::string> moved_dirs;
    for (auto it = dirs_.begin(); it != dirs_.end();) {
      if (*it == f || IsBelow(*it, f)) {
        moved_dirs.insert(t + it->substr(f.size()));
        it = dirs_.erase(it);
      } else {
        ++it;
      }
    }
    files_.merge(moved_files);
    dirs_.merge(moved_dirs);
    return absl::OkStatus();
  }

  bool FileExists(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    return files_.count(p) > 0 || dirs_.count(p) > 0;
  }

  bool IsDirectory(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    return dirs_.count(NormalizePath(path)) > 0;
  }

  absl::Status CreateDirs(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("mkdir: empty path");
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    std::vector<std::string> prefixes;
    size_t pos = 0;
    while (pos != std::string::npos) {
      pos = p.find('/', pos + 1);
      std::string prefix = p.substr(0, pos);
      if (!prefix.empty()) prefixes.push_back(std::move(prefix));
    }
    for (const std::string& prefix : prefixes) {
      if (files_.count(prefix)) return ErrnoStatus(ENOTDIR, "mkdir", prefix);
    }
    for (std::string& prefix : prefixes) dirs_.insert(std::move(prefix));
    return absl::OkStatus();
  }

  absl::Status CreateDir(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("mkdir: empty path");
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (files_.count(p) || dirs_.count(p)) return ErrnoStatus(EEXIST, "mkdir", path);
    const std::string parent = ParentDir(p);
    if (!dirs_.count(parent)) {
      // ENOTDIR if some ancestor is a file, as path resolution finds it.
      for (std::string d = parent; d != "/" && d != "."; d = ParentDir(d)) {
        if (files_.count(d)) return ErrnoStatus(ENOTDIR, "mkdir", path);
      }
      return ErrnoStatus(ENOENT, "mkdir", path);
    }
    dirs_.insert(p);
    return absl::OkStatus();
  }

  absl::Status DeleteFile(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (dirs_.count(p)) return ErrnoStatus(EISDIR, "unlink", path);
    if (files_.erase(p) == 0) return ErrnoStatus(ENOENT, "unlink", path);
    return absl::OkStatus();
  }

  absl::Status DeleteRecursively(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (p == "/" || p == ".") {
      return absl::InvalidArgumentError(absl::StrCat("refusing to delete ", path));
    }
    files_.erase(p);
    dirs_.erase(p);
    const std::string prefix = p + "/";
    for (auto it = files_.lower_bound(prefix);
         it != files_.end() && it->first.rfind(prefix, 0) == 0;) {
      it = files_.erase(it);
    }
    for (auto it = dirs_.lower_bound(prefix); it != dirs_.end() && it->rfind(prefix, 0) == 0;) {
      it = dirs_.erase(it);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (files_.count(p)) return ErrnoStatus(ENOTDIR, "opendir", path);
    if (!dirs_.count(p)) return ErrnoStatus(ENOENT, "opendir", path);
    std::set<std::string> names;
    auto add_children = [&](const auto& container) {
      for (const auto& entry : container) {
        const std::string& full = KeyOf(entry);
        if (full == p || ParentDir(full) != p) continue;
        if (p == ".") {
          names.insert(full);
        } else {
          names.insert(p == "/" ? full.substr(1) : full.substr(p.size() + 1));
        }
      }
    };
    add_children(files_);
    add_children(dirs_);
    return std::vector<std::string>(names.begin(), names.end());
  }

  absl::Status SyncDir(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!dirs_.count(NormalizePath(path))) return ErrnoStatus(ENOENT, "open directory", path);
    return absl::OkStatus();
  }

  absl::Status SyncFile(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (dirs_.count(p)) return ErrnoStatus(EISDIR, "fsync", path);
    if (!files_.count(p)) return ErrnoStatus(ENOENT, "open", path);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = NormalizePath(path);
    if (dirs_.count(p)) return ErrnoStatus(EISDIR, "size of", path);
    auto it = files_.find(p);
    if (it == files_.end()) return ErrnoStatus(ENOENT, "stat", path);
    return static_cast<uint64_t>(it->second->size());
  }

  absl::StatusOr<std::shared_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override {
    FJORD_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
    return std::shared_ptr<ReadOnlyRegion>(new StringRegion(std::move(bytes)));
  }

 private:
  class File : public WritableFile {
   public:
    File(MemEnv* env, std::string path, std::shared_ptr<std::string> contents)
        : env_(env), path_(std::move(path)), contents_(std::move(contents)) {}
    absl::Status Append(absl::string_view data) override {
      if (closed_) return absl::FailedPreconditionError(absl::StrCat("write ", path_, ": closed"));
      std::lock_guard<std::mutex> lock(env_->mu_);
      contents_->append(data.data(), data.size());
      return absl::OkStatus();
    }
    absl::Status Sync() override {
      if (closed_) return absl::FailedPreconditionError(absl::StrCat("fsync ", path_, ": closed"));
      return absl::OkStatus();
    }
    absl::Status Close() override {
      if (closed_) return absl::FailedPreconditionError(absl::StrCat("close ", path_, ": closed"));
      closed_ = true;
      return absl::OkStatus();
    }

   private:
    MemEnv* env_;
    std::string path_;
    std::shared_ptr<std::string> contents_;
    bool closed_ = false;
  };

  // Reads the contents it opened (shared with the files_ entry, or kept alone
  // once that is replaced or deleted) under the Env's lock.
  class ReadFile : public SequentialFile {
   public:
    ReadFile(MemEnv* env, std::shared_ptr<std::string> contents)
        : env_(env), contents_(std::move(contents)) {}
    absl::StatusOr<size_t> Read(char* buf, size_t n) override {
      std::lock_guard<std::mutex> lock(env_->mu_);
      const size_t got = offset_ < contents_->size() ? std::min(n, contents_->size() - offset_) : 0;
      if (got > 0) std::memcpy(buf, contents_->data() + offset_, got);
      offset_ += got;
      return got;
    }

   private:
    MemEnv* env_;
    std::shared_ptr<std::string> contents_;
    size_t offset_ = 0;
  };

  // True if `path` lies strictly below the directory `dir` (both normalized).
  static bool IsBelow(const std::string& path, const std::string& dir) {
    if (dir == "/") return path.size() > 1 && path[0] == '/';
    if (dir == ".") return !path.empty() && path[0] != '/' && path != ".";
    return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
           path[dir.size()] == '/';
  }

  bool HasChildrenLocked(const std::string& dir) const {
    for (const auto& [name, unused] : files_) {
      if (IsBelow(name, dir)) return true;
    }
    for (const std::string& d : dirs_) {
      if (IsBelow(d, dir)) return true;
    }
    return false;
  }

  static const std::string& KeyOf(
      const std::pair<const std::string, std::shared_ptr<std::string>>& e) {
    return e.first;
  }
  static const std::string& KeyOf(const std::string& e) { return e; }

  bool DirExistsLocked(const std::string& dir) const { return dirs_.count(NormalizePath(dir)) > 0; }

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::string>> files_;
  std::set<std::string> dirs_;
};

}  // namespace

// ---------------------------------------------------------------- helpers

Env* Env::Default() {
  static Env* const env = new PosixEnv();
  return env;
}

std::string ParentDir(const std::string& path) {
  std::string p = NormalizePath(path);
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return p.substr(0, slash);
}

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  while (a.size() > 1 && a.back() == '/') a.remove_suffix(1);
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  if (a == "/") return absl::StrCat("/", b);
  return absl::StrCat(a, "/", b);
}

std::string AtomicTempPath(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
}

absl::Status WriteFileAtomicWith(Env* env, const std::string& path,
                                 absl::FunctionRef<absl::Status(WritableFile*)> write) {
  if (env == nullptr) env = Env::Default();
  const std::string tmp = AtomicTempPath(path);
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(tmp));
  absl::Status status = write(file.get());
  if (status.ok()) status = file->Sync();
  // Close even after an error, so the descriptor is released before unlink.
  const absl::Status close_status = file->Close();
  if (status.ok()) status = close_status;
  file.reset();
  if (status.ok()) status = env->RenameFile(tmp, path);
  if (!status.ok()) {
    env->DeleteFile(tmp).IgnoreError();
    return status;
  }
  return env->SyncDir(ParentDir(path));
}

absl::Status Env::WriteFileAtomic(const std::string& path, absl::string_view data) {
  return WriteFileAtomicWith(this, path, [&](WritableFile* f) { return f->Append(data); });
}

std::unique_ptr<Env> NewMemEnv() { return std::make_unique<MemEnv>(); }

// ---------------------------------------------------------------- faults

struct FaultInjectionEnv::State {
  mutable std::mutex mu;
  int64_t calls[static_cast<int>(Op::kNumOps)] = {};
  // Calls allowed before failing, per op; -1 = not armed.
  int64_t fail_after[static_cast<int>(Op::kNumOps)];
  absl::Status fail_status[static_cast<int>(Op::kNumOps)];
  // FailCallsIf, per op; empty = not armed.
  std::function<bool(absl::string_view)> fail_if[static_cast<int>(Op::kNumOps)];
  absl::Status fail_if_status[static_cast<int>(Op::kNumOps)];
  bool byte_limit_armed = false;
  uint64_t byte_budget = 0;  // bytes still allowed when armed
  absl::Status byte_status;
  uint64_t bytes_written = 0;
  int64_t faults = 0;

  State() { std::fill(std::begin(fail_after), std::end(fail_after), -1); }
};

namespace {

const char* OpName(FaultInjectionEnv::Op op) {
  switch (op) {
    case FaultInjectionEnv::Op::kAppend:
      return "write";
    case FaultInjectionEnv::Op::kSync:
      return "fsync";
    case FaultInjectionEnv::Op::kClose:
      return "close";
    case FaultInjectionEnv::Op::kOpenWrite:
      return "open for writing";
    case FaultInjectionEnv::Op::kRename:
      return "rename";
    case FaultInjectionEnv::Op::kSyncDir:
      return "fsync directory";
    case FaultInjectionEnv::Op::kCreateDirs:
      return "mkdir";
    case FaultInjectionEnv::Op::kDelete:
      return "delete";
    case FaultInjectionEnv::Op::kRead:
      return "read";
    case FaultInjectionEnv::Op::kNumOps:
      break;
  }
  return "?";
}

absl::Status Injected(const absl::Status& armed, absl::string_view op, absl::string_view path) {
  return absl::Status(armed.code(),
                      absl::StrCat(op, " ", path, ": ", armed.message(), " (injected fault)"));
}

}  // namespace

absl::Status FaultInjectionEnv::Check(Op op, absl::string_view path) {
  std::lock_guard<std::mutex> lock(state_->mu);
  const int i = static_cast<int>(op);
  ++state_->calls[i];
  if (state_->fail_if[i] && state_->fail_if[i](path)) {
    ++state_->faults;
    return Injected(state_->fail_if_status[i], OpName(op), path);
  }
  if (state_->fail_after[i] < 0) return absl::OkStatus();
  if (state_->fail_after[i] > 0) {
    --state_->fail_after[i];
    return absl::OkStatus();
  }
  ++state_->faults;
  return Injected(state_->fail_status[i], OpName(op), path);
}

class FaultInjectionEnv::File : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    FJORD_RETURN_IF_ERROR(env_->Check(Op::kAppend, path_));
    State& s = *env_->state_;
    absl::string_view allowed = data;
    absl::Status fault;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.byte_limit_armed && data.size() > s.byte_budget) {
        allowed = data.substr(0, static_cast<size_t>(s.byte_budget));
        fault = Injected(s.byte_status, "write", path_);
        ++s.faults;
      }
      if (s.byte_limit_armed) s.byte_budget -= allowed.size();
    }
    if (!allowed.empty()) {
      FJORD_RETURN_IF_ERROR(base_->Append(allowed));
      std::lock_guard<std::mutex> lock(s.mu);
      s.bytes_written += allowed.size();
    }
    return fault;
  }

  absl::Status Sync() override {
    FJORD_RETURN_IF_ERROR(env_->Check(Op::kSync, path_));
    return base_->Sync();
  }

  absl::Status Close() override {
    const absl::Status injected = env_->Check(Op::kClose, path_);
    // The descriptor is released either way, as close(2) does.
    const absl::Status status = base_->Close();
    if (!injected.ok()) return injected;
    return status;
  }

 private:
  FaultInjectionEnv* env_;
  std::string path_;
  std::unique_ptr<WritableFile> base_;
};

class FaultInjectionEnv::ReadFile : public SequentialFile {
 public:
  ReadFile(FaultInjectionEnv* env, std::string path, std::unique_ptr<SequentialFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    FJORD_RETURN_IF_ERROR(env_->Check(Op::kRead, path_));
    return base_->Read(buf, n);
  }

 private:
  FaultInjectionEnv* env_;
  std::string path_;
  std::unique_ptr<SequentialFile> base_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* base) : base_(base), state_(std::make_shared<State>()) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

absl::Status FaultInjectionEnv::NoSpaceError() {
  return absl::ResourceExhaustedError("No space left on device");
}

void FaultInjectionEnv::FailWritesAfterBytes(uint64_t bytes, absl::Status status) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->byte_limit_armed = true;
  state_->byte_budget = bytes;
  state_->byte_status = std::move(status);
}

void FaultInjectionEnv::FailAfterCalls(Op op, int64_t n, absl::Status status) {
  std::lock_guard<std::mutex> lock(state_->mu);
  const int i = static_cast<int>(op);
  state_->fail_after[i] = std::max<int64_t>(n, 0);
  state_->fail_status[i] = std::move(status);
}

void FaultInjectionEnv::FailCallsIf(Op op, std::function<bool(absl::string_view path)> matches,
                                    absl::Status status) {
  std::lock_guard<std::mutex> lock(state_->mu);
  const int i = static_cast<int>(op);
  state_->fail_if[i] = std::move(matches);
  state_->fail_if_status[i] = std::move(status);
}

void FaultInjectionEnv::ClearFaults() {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::fill(std::begin(state_->fail_after), std::end(state_->fail_after), -1);
  for (auto& f : state_->fail_if) f = nullptr;
  state_->byte_limit_armed = false;
}

int64_t FaultInjectionEnv::calls(Op op) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->calls[static_cast<int>(op)];
}

uint64_t FaultInjectionEnv::bytes_written() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->bytes_written;
}

int64_t FaultInjectionEnv::faults_injected() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->faults;
}

absl::StatusOr<std::string> FaultInjectionEnv::ReadFileToString(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kRead, path));
  return base_->ReadFileToString(path);
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(
    const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kOpenWrite, path));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> base, base_->NewWritableFile(path));
  return std::unique_ptr<WritableFile>(new File(this, path, std::move(base)));
}

absl::StatusOr<std::unique_ptr<SequentialFile>> FaultInjectionEnv::NewSequentialFile(
    const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kRead, path));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<SequentialFile> base, base_->NewSequentialFile(path));
  return std::unique_ptr<SequentialFile>(new ReadFile(this, path, std::move(base)));
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  FJORD_RETURN_IF_ERROR(Check(Op::kRename, absl::StrCat(from, " to ", to)));
  return base_->RenameFile(from, to);
}

absl::Status FaultInjectionEnv::RenameDir(const std::string& from, const std::string& to) {
  FJORD_RETURN_IF_ERROR(Check(Op::kRename, absl::StrCat(from, " to ", to)));
  return base_->RenameDir(from, to);
}

bool FaultInjectionEnv::FileExists(const std::string& path) { return base_->FileExists(path); }

bool FaultInjectionEnv::IsDirectory(const std::string& path) { return base_->IsDirectory(path); }

absl::Status FaultInjectionEnv::CreateDirs(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kCreateDirs, path));
  return base_->CreateDirs(path);
}

absl::Status FaultInjectionEnv::CreateDir(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kCreateDirs, path));
  return base_->CreateDir(path);
}

absl::Status FaultInjectionEnv::DeleteFile(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kDelete, path));
  return base_->DeleteFile(path);
}

absl::Status FaultInjectionEnv::DeleteRecursively(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kDelete, path));
  return base_->DeleteRecursively(path);
}

absl::StatusOr<std::vector<std::string>> FaultInjectionEnv::ListDir(const std::string& path) {
  return base_->ListDir(path);
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kSyncDir, path));
  return base_->SyncDir(path);
}

absl::Status FaultInjectionEnv::SyncFile(const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kSync, path));
  return base_->SyncFile(path);
}

absl::StatusOr<uint64_t> FaultInjectionEnv::FileSize(const std::string& path) {
  return base_->FileSize(path);
}

absl::StatusOr<std::shared_ptr<ReadOnlyRegion>> FaultInjectionEnv::MapReadOnly(
    const std::string& path) {
  FJORD_RETURN_IF_ERROR(Check(Op::kRead, path));
  return base_->MapReadOnly(path);
}

}  // namespace fjord
