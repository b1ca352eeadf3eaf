#include "daemon/storage/storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/protocol/errors.h"
#include "runtime/io/safetensors_header.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {
namespace {

// InvalidArgument unless `name` (a tenant's or a job's id, shown as `what`)
// is a single plain path component.
absl::Status PlainName(const std::string& name, absl::string_view what) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", name, "' is not a plain name"));
  }
  return absl::OkStatus();
}

// The code point of the UTF-8 sequence at name[*i] (advancing *i past it),
// or -1 for an invalid one: a stray continuation byte, a truncated
// sequence, an overlong encoding, a surrogate or a value past U+10FFFF.
int32_t DecodeUtf8(absl::string_view name, size_t* i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(name[k]); };
  const unsigned char lead = byte(*i);
  if (lead < 0x80) {
    ++*i;
    return lead;
  }
  size_t len = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if ((lead & 0xE0) == 0xC0) {
    len = 2, cp = lead & 0x1F, min = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    len = 3, cp = lead & 0x0F, min = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    len = 4, cp = lead & 0x07, min = 0x10000;
  } else {
    return -1;
  }
  if (name.size() - *i < len) return -1;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(*i + k) & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (byte(*i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  *i += len;
  return static_cast<int32_t>(cp);
}

// Control characters, line and paragraph separators, and the bidi and
// invisible formatting characters that make a name display as another.
bool RefusedInFilename(int32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0x061C ||
         (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2060 && cp <= 0x2069) || cp == 0xFEFF;
}

}  // namespace

bool ValidUploadFilename(absl::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (size_t i = 0; i < name.size();) {
    const int32_t cp = DecodeUtf8(name, &i);
    if (cp < 0 || cp == '/' || RefusedInFilename(cp)) return false;
  }
  return true;
}

absl::Status Storage::EnsureTenant(const std::string& tenant) const {
  FJORD_RETURN_IF_ERROR(PlainName(tenant, "tenant"));
  FJORD_ASSIGN_OR_RETURN(SafeDir root, OpenRoot());
  FJORD_ASSIGN_OR_RETURN(SafeDir area, root.MakeDir(tenant, 0750));
  FJORD_RETURN_IF_ERROR(area.MakeDir("files", 0750).status());
  return area.MakeDir("jobs", 0750).status();
}

absl::StatusOr<SafeDir> Storage::EnsureJobDir(const std::string& tenant,
                                              const std::string& job_id) const {
  FJORD_RETURN_IF_ERROR(PlainName(tenant, "tenant"));
  FJORD_RETURN_IF_ERROR(PlainName(job_id, "job id"));
  FJORD_ASSIGN_OR_RETURN(SafeDir root, OpenRoot());
  FJORD_ASSIGN_OR_RETURN(SafeDir area, root.MakeDir(tenant, 0750));
  FJORD_ASSIGN_OR_RETURN(SafeDir jobs, area.MakeDir("jobs", 0750));
  FJORD_ASSIGN_OR_RETURN(SafeDir job, jobs.MakeDir(job_id, 0750));
  FJORD_RETURN_IF_ERROR(job.MakeDir("checkpoints", 0750).status());
  return job;
}

absl::StatusOr<SafeDir> Storage::OpenRoot() const {
  absl::StatusOr<SafeDir> root = SafeDir::OpenTrusted(root_);
  if (!root.ok())
    return absl::UnavailableError(absl::StrCat("storage root ", root.status().message()));
  return root;
}

absl::StatusOr<SafeDir> Storage::OpenTenantDir(const std::string& tenant) const {
  FJORD_RETURN_IF_ERROR(PlainName(tenant, "tenant"));
  FJORD_ASSIGN_OR_RETURN(SafeDir root, OpenRoot());
  return root.OpenDir(tenant);
}

absl::StatusOr<SafeDir> Storage::OpenJobDir(const std::string& tenant,
                                            const std::string& job_id) const {
  FJORD_RETURN_IF_ERROR(PlainName(tenant, "tenant"));
  FJORD_RETURN_IF_ERROR(PlainName(job_id, "job id"));
  FJORD_ASSIGN_OR_RETURN(SafeDir root, OpenRoot());
  return root.OpenDir(absl::StrCat(tenant, "/jobs/", job_id));
}

absl::StatusOr<std::string> Storage::ResolveTenantFile(const std::string& tenant,
                                                       absl::string_view relative,
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
  UniqueFd dir(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    return absl::UnavailableError(
        absl::StrCat("storage root ", root_, " is not accessible: ", std::strerror(errno)));
  }
  UniqueFd tdir(
      ::openat(dir.get(), tenant.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (tdir.get() < 0) return bad("does not exist (your storage area is empty)");
  dir = std::move(tdir);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    UniqueFd next(
        ::openat(dir.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) {
      if (errno == ELOOP || errno == ENOTDIR) {
        struct stat st {};
        if (::fstatat(dir.get(), parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode)) {
          return bad(absl::StrCat("goes through a symbolic link ('", parts[i], "'); refused"));
        }
        return bad(absl::StrCat("has '", parts[i], "', which is not a directory"));
      }
      return bad("does not exist");
    }
    dir = std::move(next);
  }
  UniqueFd file(
      ::openat(dir.get(), parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (file.get() < 0) {
    if (errno == ELOOP) return bad("is a symbolic link; refused");
    if (errno == ENOENT) return bad("does not exist");
    return bad(absl::StrCat("cannot be opened: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) return bad("is not a regular file");
  return absl::StrCat(TenantDir(tenant), "/", relative);
}

namespace {

// Bytes of the regular files below directory `dfd` (owned: closed here),
// never following a symlink and not entering directories nested deeper than
// 64 (a worker cannot make the walk recurse without bound). What cannot be
// read is skipped.
uint64_t BytesBelow(int dfd, int depth) {
  DIR* d = ::fdopendir(dfd);  // owns dfd from here
  if (d == nullptr) {
    ::close(dfd);
    return 0;
  }
  uint64_t total = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISREG(st.st_mode)) total += static_cast<uint64_t>(st.st_size);
    if (!S_ISDIR(st.st_mode) || depth >= 64) continue;
    const int child =
        ::openat(::dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child >= 0) total += BytesBelow(child, depth + 1);
  }
  ::closedir(d);
  return total;
}

}  // namespace

namespace {

// Re-owns everything below `dir` (at `rel` below the tenant's area, "" for
// the area itself) as ReownTenantArea says, `depth` levels down.
absl::Status ReownBelow(const SafeDir& dir, const std::string& rel, int depth, uint32_t uid,
                        uint32_t gid) {
  FJORD_ASSIGN_OR_RETURN(std::vector<SafeDir::Entry> entries, dir.List());
  for (const SafeDir::Entry& e : entries) {
    if (e.type == SafeDir::Entry::Type::kSymlink) continue;  // ChownEntry would skip it too
    const std::string path = rel.empty() ? e.name : absl::StrCat(rel, "/", e.name);
    const bool is_dir = e.type == SafeDir::Entry::Type::kDir;
    // jobs/<id> and everything in it is the worker's; a plain file directly
    // in jobs/ is not a job. (jobs/ itself is root's: no worker can swap a
    // job directory for a file between List and ChownEntry.)
    const bool in_job =
        absl::StartsWith(path, "jobs/") && (is_dir || path.find('/', 5) != std::string::npos);
    const absl::Status changed =
        dir.ChownEntry(e.name, in_job ? std::optional<uid_t>(uid) : std::nullopt, gid);
    if (absl::IsNotFound(changed)) continue;  // removed since it was listed: nothing to re-own
    FJORD_RETURN_IF_ERROR(changed);
    if (!is_dir || depth >= 64) continue;
    absl::StatusOr<SafeDir> child = dir.OpenDir(e.name);
    if (absl::IsNotFound(child.status())) continue;
    FJORD_RETURN_IF_ERROR(child.status());
    FJORD_RETURN_IF_ERROR(ReownBelow(*child, path, depth + 1, uid, gid));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Storage::ReownTenantArea(const std::string& tenant, uint32_t uid, uint32_t gid) const {
  absl::StatusOr<SafeDir> area = OpenTenantDir(tenant);
  // The area was made before it is re-owned: one that is gone is the
  // storage's problem (as a vanished root is), not a missing resource.
  if (absl::IsNotFound(area.status())) return absl::UnavailableError(area.status().message());
  FJORD_RETURN_IF_ERROR(area.status());
  FJORD_RETURN_IF_ERROR(area->Chown(std::nullopt, gid));
  return ReownBelow(*area, "", 0, uid, gid);
}

uint64_t Storage::TreeBytes(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return 0;
  return BytesBelow(dfd, 0);
}

absl::Status VerifyReportDir(const SafeDir& dir) {
  constexpr size_t kMaxReportBytes = size_t{64} << 20;
  uint64_t size = 0;
  absl::StatusOr<std::string> text = dir.ReadHead("report.json", kMaxReportBytes, &size);
  if (absl::IsFailedPrecondition(text.status()))
    return absl::DataLossError(text.status().message());
  if (!text.ok()) return text.status();
  const nlohmann::json report = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (size > text->size() || !report.is_object() ||
      report.value("schema", std::string()) != "fjord.evaluation/1" ||
      !report.contains("datasets") || !report["datasets"].is_array()) {
    return absl::DataLossError(absl::StrCat(
        dir.path(), "/report.json: not an evaluation report (schema fjord.evaluation/1)"));
  }
  return absl::OkStatus();
}

absl::Status VerifyAdapterDir(const SafeDir& dir) {
  // A file that is not a plain one (a symlink, a hard link, a FIFO) is a
  // broken adapter like a torn one: DataLoss with SafeDir's reason.
  auto read = [&](absl::string_view name, size_t max_bytes,
                  uint64_t* size) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> bytes = dir.ReadHead(name, max_bytes, size);
    if (absl::IsFailedPrecondition(bytes.status()))
      return absl::DataLossError(bytes.status().message());
    return bytes;
  };
  const std::string config_path = dir.path() + "/adapter_config.json";
  uint64_t size = 0;
  FJORD_ASSIGN_OR_RETURN(const std::string text, read("adapter_config.json", 1 << 20, &size));
  const nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (size > text.size() || !config.is_object() || !config.contains("peft_type") ||
      !config["peft_type"].is_string()) {
    return absl::DataLossError(
        absl::StrCat(config_path, ": not a PEFT adapter config (a JSON object with peft_type)"));
  }
  const std::string weights_path = dir.path() + "/adapter_model.safetensors";
  FJORD_ASSIGN_OR_RETURN(std::string head, read("adapter_model.safetensors", 8, &size));
  if (head.size() < 8)
    return absl::DataLossError(
        absl::StrCat(weights_path, ": ", size, " bytes, too short for a header"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(head[i]);
  if (n > size - 8 || n > (uint64_t{100} << 20)) {
    return absl::DataLossError(absl::StrCat(weights_path, ": header length ", n,
                                            " does not fit the file's ", size, " bytes"));
  }
  // Opened again: a file changed in between is caught by the parser (its
  // length prefix and size are those of this read).
  FJORD_ASSIGN_OR_RETURN(head, read("adapter_model.safetensors", 8 + n, &size));
  // The parser also checks that the tensors cover the data buffer exactly,
  // so a file cut short after its header is refused too.
  absl::StatusOr<io::SafetensorsHeader> header =
      io::ParseSafetensorsHeaderPrefix(head, size, weights_path);
  if (!header.ok()) return absl::DataLossError(header.status().message());
  return absl::OkStatus();
}

}  // namespace fjord::daemon
