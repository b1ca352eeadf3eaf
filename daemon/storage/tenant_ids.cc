#include "daemon/storage/tenant_ids.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace fjord::daemon {
namespace {

absl::Status Failed(const std::string& what, int err) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::UnavailableError(absl::StrCat("storage unavailable: ", msg));
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The tenant a claim names, nullopt when there is no claim; an error for
// anything but a regular file that can be read.
absl::StatusOr<std::optional<std::string>> ReadClaim(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    return Failed(absl::StrCat("read tenant id claim ", path), errno);
  }
  struct stat st {};
  char buf[300];
  ssize_t n = -1;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) n = ::read(fd, buf, sizeof(buf));
  const int err = errno;
  ::close(fd);
  if (n < 0)
    return Failed(absl::StrCat("read tenant id claim ", path), S_ISREG(st.st_mode) ? err : EINVAL);
  return std::string(absl::StripSuffix(absl::string_view(buf, static_cast<size_t>(n)), "\n"));
}

}  // namespace

TenantIds::TenantIds(std::string storage_root, uint32_t first, uint32_t count)
    : dir_(std::move(storage_root) + "/.fjord-tenant-ids"),
      first_(first),
      count_(count == 0 ? 1 : count) {}

absl::StatusOr<uint32_t> TenantIds::Resolve(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find(tenant);
  if (it != cache_.end()) return it->second;
  absl::StatusOr<uint32_t> id = Claim(tenant);
  if (id.ok()) cache_[tenant] = *id;
  return id;
}

absl::StatusOr<uint32_t> TenantIds::Claim(const std::string& tenant) {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    return Failed(absl::StrCat("mkdir ", dir_), errno);
  struct stat st {};
  if (::lstat(dir_.c_str(), &st) != 0) return Failed(absl::StrCat("stat ", dir_), errno);
  // Whoever can write here can hand a tenant another tenant's id.
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    const char* what = S_ISLNK(st.st_mode)    ? "a symbolic link"
                       : !S_ISDIR(st.st_mode) ? "not a directory"
                                              : "";
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s must be a directory owned by fjordd's user (uid %d) that only it can write; it is %s",
        dir_, ::geteuid(),
        *what ? what
              : absl::StrFormat("owned by uid %d with mode %o", st.st_uid, st.st_mode & 0777)));
  }
  const uint64_t start = Fnv1a(tenant) % count_;
  std::string tmp;
  for (uint64_t i = 0; i < count_; ++i) {
    const uint32_t id = first_ + static_cast<uint32_t>((start + i) % count_);
    const std::string path = absl::StrCat(dir_, "/", id);
    absl::StatusOr<std::optional<std::string>> owner = ReadClaim(path);
    if (!owner.ok()) return owner.status();
    if (owner->has_value()) {
      if (**owner == tenant) return id;
      continue;
    }
    // Unclaimed: claim it with a complete file, atomically.
    if (tmp.empty()) {
      std::random_device rd;
      tmp = absl::StrCat(dir_, "/.claim-", ::getpid(), "-", rd(), rd());
      const int fd =
          ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) return Failed(absl::StrCat("create ", tmp), errno);
      const std::string text = tenant + "\n";
      const bool written =
          ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
          ::fsync(fd) == 0;
      const int err = errno;
      ::close(fd);
      if (!written) {
        ::unlink(tmp.c_str());
        return Failed(absl::StrCat("write ", tmp), err);
      }
    }
    if (::link(tmp.c_str(), path.c_str()) == 0) {
      ::unlink(tmp.c_str());
      const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
      }
      return id;
    }
    if (errno != EEXIST) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return Failed(absl::StrCat("link ", path), err);
    }
    // Another node claimed it a moment ago: for this tenant, or another one.
    owner = ReadClaim(path);
    if (owner.ok() && *owner == tenant) {
      ::unlink(tmp.c_str());
      return id;
    }
  }
  if (!tmp.empty()) ::unlink(tmp.c_str());
  return absl::ResourceExhaustedError(absl::StrCat(
      "worker.tenant_uid_range ", first_, "-", first_ + count_ - 1, " has no free id for tenant '",
      tenant, "': all ", count_, " belong to other tenants (claims in ", dir_, ")"));
}

}  // namespace fjord::daemon
