#include "runtime/train/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
namespace fs = std::filesystem;
namespace {

constexpr char kManifest[] = "MANIFEST.json";

absl::Status Errno(absl::string_view what, const std::string& path) {
  const int e = errno;
  const std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(e));
  if (e == ENOSPC || e == EDQUOT) return absl::ResourceExhaustedError(msg);
  if (e == ENOENT) return absl::NotFoundError(msg);
  if (e == EACCES || e == EPERM || e == EROFS) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (rc != 0) return Errno("fsync", path);
  return absl::OkStatus();
}

struct FileDigest {
  uint64_t size = 0;
  std::string sha256;
};

absl::StatusOr<FileDigest> Digest(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  Sha256 hash;
  FileDigest d;
  std::string buf(1 << 20, '\0');
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const absl::Status s = Errno("read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    hash.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    d.size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  d.sha256 = hash.FinalHex();
  return d;
}

// Relative paths of regular files under dir, sorted.
absl::StatusOr<std::vector<std::string>> ListFiles(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file()) out.push_back(fs::relative(it->path(), dir).string());
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir, ": ", ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

bool ParseStepName(const std::string& name, int64_t* step) {
  if (name.rfind("step-", 0) != 0 || name.size() <= 5) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
    if (v > (int64_t{1} << 50)) return false;
  }
  *step = v;
  return true;
}

// Writers killed mid-checkpoint (kill -9, OOM, a node crash) leave
// .tmp-step-* and step-*.old-* directories behind, named with their pid.
// There is one writer per root (a job has one trainer), so the next writer
// removes them. Best effort.
void RemoveStaleTemporaries(const std::string& root) {
  std::vector<fs::path> stale;
  std::error_code ec;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(".tmp-step-", 0) == 0 || (name.rfind("step-", 0) == 0 && name.find(".old-") != std::string::npos)) {
      stale.push_back(it->path());
    }
  }
  for (const fs::path& p : stale) fs::remove_all(p, ec);
}

}  // namespace

std::vector<FoundCheckpoint> ListCheckpoints(const std::string& root) {
  std::vector<FoundCheckpoint> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    int64_t step = 0;
    if (it->is_directory() && ParseStepName(it->path().filename().string(), &step)) {
      out.push_back({it->path().string(), step});
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

absl::Status VerifyCheckpoint(const std::string& dir) {
  const std::string manifest_path = dir + "/" + kManifest;
  nlohmann::json manifest;
  {
    FILE* f = std::fopen(manifest_path.c_str(), "rb");
    if (f == nullptr) return absl::DataLossError(absl::StrCat(manifest_path, ": missing (torn checkpoint?)"));
    std::string text;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
    manifest = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": not a valid manifest"));
  }
  const auto& files = manifest["files"];
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> present, ListFiles(dir));
  for (const std::string& rel : present) {
    if (rel != kManifest && !files.contains(rel)) {
      return absl::DataLossError(absl::StrCat(dir, ": file ", rel, " is not in the manifest"));
    }
  }
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string path = dir + "/" + it.key();
    const auto& entry = it.value();
    if (!entry.is_object() || !entry.contains("sha256") || !entry.contains("size") ||
        !entry["sha256"].is_string() || !entry["size"].is_number_unsigned()) {
      return absl::DataLossError(absl::StrCat(manifest_path, ": bad entry for ", it.key()));
    }
    absl::StatusOr<FileDigest> d = Digest(path);
    if (!d.ok()) return absl::DataLossError(absl::StrCat(path, ": listed in the manifest but unreadable: ", d.status().message()));
    if (d->size != entry["size"].get<uint64_t>()) {
      return absl::DataLossError(absl::StrCat(path, ": size ", d->size, " != ", entry["size"].get<uint64_t>(), " in the manifest"));
    }
    if (d->sha256 != entry["sha256"].get<std::string>()) {
      return absl::DataLossError(absl::StrCat(path, ": SHA-256 does not match the manifest"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FoundCheckpoint> FindLatestCheckpoint(const std::string& root,
                                                     std::vector<std::string>* skipped) {
  std::vector<FoundCheckpoint> all = ListCheckpoints(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const absl::Status s = VerifyCheckpoint(it->dir);
    if (s.ok()) return *it;
    if (skipped != nullptr) skipped->push_back(absl::StrCat(it->dir, ": ", s.message()));
  }
  return absl::NotFoundError(absl::StrCat("no valid checkpoint under ", root));
}

namespace {

absl::StatusOr<std::string> WriteCheckpointImpl(
    const std::string& root, int64_t step, int64_t keep_last,
    const std::function<absl::Status(const std::string& tmp_dir)>& write_files) {
  // Only `root` itself is created: a missing parent (the job's directory, an
  // unmounted or deleted storage root) is an error, never silently rebuilt
  // on whatever disk is underneath.
  if (::mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) return Errno("cannot create", root);
  std::error_code ec;
  RemoveStaleTemporaries(root);
  const std::string name = absl::StrFormat("step-%08d", step);
  const std::string final_dir = root + "/" + name;
  const std::string tmp = absl::StrCat(root, "/.tmp-", name, "-", ::getpid());
  fs::remove_all(tmp, ec);
  if (::mkdir(tmp.c_str(), 0755) != 0) return Errno("mkdir", tmp);

  auto fail = [&](absl::Status s) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return s;
  };
  absl::Status s = write_files(tmp);
  if (!s.ok()) return fail(s);

  absl::StatusOr<std::vector<std::string>> files = ListFiles(tmp);
  if (!files.ok()) return fail(files.status());
  nlohmann::json manifest = {{"format", "fjord.checkpoint"}, {"version", 1}, {"step", step}};
  manifest["files"] = nlohmann::json::object();
  std::map<std::string, bool> dirs;
  for (const std::string& rel : *files) {
    absl::StatusOr<FileDigest> d = Digest(tmp + "/" + rel);
    if (!d.ok()) return fail(d.status());
    manifest["files"][rel] = {{"size", d->size}, {"sha256", d->sha256}};
    if (absl::Status f = FsyncPath(tmp + "/" + rel, false); !f.ok()) return fail(f);
    dirs[fs::path(tmp + "/" + rel).parent_path().string()] = true;
  }
  {
    const std::string path = tmp + "/" + kManifest;
    const std::string text = manifest.dump(2) + "\n";
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return fail(Errno("create", path));
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    const int saved = errno;
    const bool closed = std::fclose(f) == 0;
    errno = ok ? errno : saved;
    if (!ok || !closed) return fail(Errno("write", path));
    if (absl::Status f2 = FsyncPath(path, false); !f2.ok()) return fail(f2);
  }
  dirs[tmp] = true;
  for (const auto& [d, unused] : dirs) {
    if (absl::Status f = FsyncPath(d, true); !f.ok()) return fail(f);
  }
  // Replace a checkpoint of the same step (a resumed run repeating it).
  if (fs::exists(final_dir, ec)) {
    const std::string old = final_dir + ".old-" + std::to_string(::getpid());
    if (::rename(final_dir.c_str(), old.c_str()) != 0) return fail(Errno("rename", final_dir));
    fs::remove_all(old, ec);
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) return fail(Errno("rename", tmp));
  FJORD_RETURN_IF_ERROR(FsyncPath(root, true));

  if (keep_last > 0) {
    std::vector<FoundCheckpoint> all = ListCheckpoints(root);
    for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) {
      fs::remove_all(all[i].dir, ec);  // best effort; a leftover is harmless
    }
  }
  return final_dir;
}

}  // namespace

absl::StatusOr<std::string> WriteCheckpoint(
    const std::string& root, int64_t step, int64_t keep_last,
    const std::function<absl::Status(const std::string& tmp_dir)>& write_files) {
  absl::StatusOr<std::string> r = WriteCheckpointImpl(root, step, keep_last, write_files);
  // A path that vanished under a checkpoint being written is the storage's
  // fault, not a missing input of the job (NotFound means "fix your config"
  // to fjord-train's callers): Unavailable.
  if (r.status().code() == absl::StatusCode::kNotFound) {
    return absl::UnavailableError(absl::StrCat(r.status().message(),
                                               " (was the output directory deleted or its storage unmounted?)"));
  }
  return r;
}

}  // namespace fjord::train
