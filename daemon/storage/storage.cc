#include "daemon/storage/storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/protocol/errors.h"
#include "runtime/io/safetensors_header.h"

namespace fjord::daemon {
namespace {

// RAII file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// The node's storage failing is not the client's doing: a read-only, full
// or vanished storage root is Unavailable / ResourceExhausted (retry later),
// only a real permission problem is PermissionDenied.
absl::Status StorageError(const std::string& what, int err) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(absl::StrCat("storage is full: ", msg));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EROFS:
    case ENOENT:
    case EIO:
    case ESTALE:
    case ENOTCONN:
      return absl::UnavailableError(absl::StrCat("storage unavailable: ", msg));
    default:
      return absl::InternalError(msg);
  }
}

absl::Status MakeDirNoFollow(int parent, const std::string& name, const std::string& full) {
  if (::mkdirat(parent, name.c_str(), 0750) != 0 && errno != EEXIST) {
    return StorageError(absl::StrCat("mkdir ", full), errno);
  }
  struct stat st {};
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return absl::InternalError(absl::StrCat("stat ", full, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(full, " exists but is ", S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory"));
  }
  return absl::OkStatus();
}

// Creates root/a/b/... below root without following symlinks.
absl::Status MakeDirs(const std::string& root, const std::vector<std::string>& parts) {
  Fd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    return absl::UnavailableError(
        absl::StrCat("storage root ", root, " is not an accessible directory: ", std::strerror(errno)));
  }
  std::string full = root;
  for (const std::string& p : parts) {
    full += "/" + p;
    if (absl::Status s = MakeDirNoFollow(dir.get(), p, full); !s.ok()) return s;
    Fd next(::openat(dir.get(), p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) return absl::InternalError(absl::StrCat("open ", full, ": ", std::strerror(errno)));
    dir = std::move(next);
  }
  return absl::OkStatus();
}

}  // namespace

bool ValidUploadFilename(absl::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

absl::Status Storage::EnsureTenant(const std::string& tenant) const {
  if (absl::Status s = MakeDirs(root_, {tenant, "files"}); !s.ok()) return s;
  return MakeDirs(root_, {tenant, "jobs"});
}

absl::Status Storage::EnsureJobDir(const std::string& tenant, const std::string& job_id) const {
  return MakeDirs(root_, {tenant, "jobs", job_id, "checkpoints"});
}

absl::StatusOr<std::string> Storage::ResolveTenantFile(const std::string& tenant, absl::string_view relative,
                                                       absl::string_view param) const {
  const std::string shown(relative);
  auto bad = [&](absl::string_view why) {
    return protocol::InvalidArgument(absl::StrCat(param, " '", shown, "' ", why), param);
  };
  if (relative.empty()) return bad("is empty");
  if (relative.find('\0') != absl::string_view::npos) return bad("contains NUL");
  if (relative[0] == '/') return bad("is an absolute path; name a path inside your storage area");
  std::vector<std::string> parts = absl::StrSplit(relative, '/');
  for (const std::string& p : parts) {
    if (p.empty() || p == "." || p == "..") {
      return bad("has an empty, '.' or '..' component; paths must stay inside your storage area");
    }
  }
  Fd dir(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    return absl::UnavailableError(absl::StrCat("storage root ", root_, " is not accessible: ", std::strerror(errno)));
  }
  Fd tdir(::openat(dir.get(), tenant.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (tdir.get() < 0) return bad("does not exist (your storage area is empty)");
  dir = std::move(tdir);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    Fd next(::openat(dir.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) {
      if (errno == ELOOP || errno == ENOTDIR) {
        struct stat st {};
        if (::fstatat(dir.get(), parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
          return bad(absl::StrCat("goes through a symbolic link ('", parts[i], "'); refused"));
        }
        return bad(absl::StrCat("has '", parts[i], "', which is not a directory"));
      }
      return bad("does not exist");
    }
    dir = std::move(next);
  }
  Fd file(::openat(dir.get(), parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (file.get() < 0) {
    if (errno == ELOOP) return bad("is a symbolic link; refused");
    if (errno == ENOENT) return bad("does not exist");
    return bad(absl::StrCat("cannot be opened: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) return bad("is not a regular file");
  return absl::StrCat(TenantDir(tenant), "/", relative);
}

absl::StatusOr<std::vector<Storage::Entry>> Storage::ListRegularFiles(const std::string& path) {
  Fd dfd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dfd.get() < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  DIR* d = ::fdopendir(::dup(dfd.get()));
  if (d == nullptr) return absl::InternalError(absl::StrCat("opendir ", path, ": ", std::strerror(errno)));
  std::vector<Entry> out;
  while (struct dirent* e = ::readdir(d)) {
    struct stat st {};
    if (::fstatat(dfd.get(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    out.push_back({e->d_name, static_cast<uint64_t>(st.st_size)});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return out;
}

namespace {

// Depth-first over everything below the directory `dfd` (owned: closed
// here), never following a symlink (visited, not entered) and not entering
// directories nested deeper than 64 (a worker cannot make a walk recurse
// without bound). `rel` is the directory's path below the walk's root
// `root` ("" at the root; `root` only names paths in errors). visit(parent
// fd, name, stat, path below the root) returning an
// error stops the walk with it; a directory that cannot be opened stops it
// too when `strict`, else it is skipped.
using Visit = std::function<absl::Status(int, const char*, const struct stat&, const std::string&)>;
absl::Status WalkAt(int dfd, const std::string& root, const std::string& rel, int depth, bool strict,
                    const Visit& visit) {
  DIR* d = ::fdopendir(dfd);  // owns dfd from here
  if (d == nullptr) {
    const int err = errno;
    ::close(dfd);
    return strict ? StorageError(absl::StrCat("opendir ", root, "/", rel), err) : absl::OkStatus();
  }
  absl::Status result;
  while (struct dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    const std::string path = rel.empty() ? std::string(e->d_name) : absl::StrCat(rel, "/", e->d_name);
    result = visit(::dirfd(d), e->d_name, st, path);
    if (!result.ok()) break;
    if (!S_ISDIR(st.st_mode) || depth >= 64) continue;
    const int child = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      if (!strict) continue;
      result = StorageError(absl::StrCat("open ", root, "/", path), errno);
      break;
    }
    result = WalkAt(child, root, path, depth + 1, strict, visit);
    if (!result.ok()) break;
  }
  ::closedir(d);
  return result;
}

}  // namespace

absl::Status Storage::ReownTenantArea(const std::string& tenant, uint32_t uid, uint32_t gid) const {
  const std::string area = TenantDir(tenant);
  const int dfd = ::open(area.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return StorageError(absl::StrCat("open ", area), errno);
  if (::fchown(dfd, static_cast<uid_t>(-1), gid) != 0) {
    const int err = errno;
    ::close(dfd);
    return StorageError(absl::StrCat("chown ", area), err);
  }
  auto reown = [&](int parent, const char* name, const struct stat& st, const std::string& path) {
    if (S_ISLNK(st.st_mode)) return absl::OkStatus();
    // jobs/<id> and everything in it is the worker's; a plain file directly
    // in jobs/ is not a job.
    const bool in_job =
        absl::StartsWith(path, "jobs/") && (S_ISDIR(st.st_mode) || path.find('/', 5) != std::string::npos);
    const uid_t owner = in_job ? uid : static_cast<uid_t>(-1);  // -1: keep root
    if (::fchownat(parent, name, owner, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return StorageError(absl::StrCat("chown ", area, "/", path), errno);
    }
    return absl::OkStatus();
  };
  return WalkAt(dfd, area, "", 0, /*strict=*/true, reown);
}

uint64_t Storage::TreeBytes(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return 0;
  uint64_t total = 0;
  (void)WalkAt(dfd, dir, "", 0, /*strict=*/false, [&](int, const char*, const struct stat& st, const std::string&) {
    if (S_ISREG(st.st_mode)) total += static_cast<uint64_t>(st.st_size);
    return absl::OkStatus();
  });
  return total;
}

absl::Status VerifyAdapterDir(const std::string& dir) {
  auto read = [](const std::string& path, size_t max_bytes, std::string* out, uint64_t* size) -> absl::Status {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) return absl::DataLossError(absl::StrCat(path, " is not a regular file"));
    *size = static_cast<uint64_t>(st.st_size);
    std::ifstream f(path, std::ios::binary);
    out->resize(std::min<uint64_t>(*size, max_bytes));
    if (!f.read(out->data(), static_cast<std::streamsize>(out->size()))) {
      return absl::DataLossError(absl::StrCat(path, ": cannot be read"));
    }
    return absl::OkStatus();
  };
  const std::string config_path = dir + "/adapter_config.json";
  std::string text;
  uint64_t size = 0;
  if (absl::Status s = read(config_path, 1 << 20, &text, &size); !s.ok()) return s;
  const nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (size > text.size() || !config.is_object() || !config.contains("peft_type") || !config["peft_type"].is_string()) {
    return absl::DataLossError(absl::StrCat(config_path, ": not a PEFT adapter config (a JSON object with peft_type)"));
  }
  const std::string weights_path = dir + "/adapter_model.safetensors";
  std::string head;
  if (absl::Status s = read(weights_path, 8, &head, &size); !s.ok()) return s;
  if (head.size() < 8) return absl::DataLossError(absl::StrCat(weights_path, ": ", size, " bytes, too short for a header"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(head[i]);
  if (n > size - 8 || n > (uint64_t{100} << 20)) {
    return absl::DataLossError(absl::StrCat(weights_path, ": header length ", n, " does not fit the file's ", size, " bytes"));
  }
  if (absl::Status s = read(weights_path, 8 + n, &head, &size); !s.ok()) return s;
  // The parser also checks that the tensors cover the data buffer exactly,
  // so a file cut short after its header is refused too.
  absl::StatusOr<io::SafetensorsHeader> header = io::ParseSafetensorsHeaderPrefix(head, size, weights_path);
  if (!header.ok()) return absl::DataLossError(header.status().message());
  return absl::OkStatus();
}

}  // namespace fjord::daemon
