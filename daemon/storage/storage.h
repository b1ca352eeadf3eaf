// The shared storage root, laid out per tenant and job:
//   <root>/<tenant>/files/<file-id>                 uploaded files
//   <root>/<tenant>/files/.upload-<upload-id>       uploads in progress
//   <root>/<tenant>/jobs/<job-id>/{job.yaml, checkpoints/, adapter/, events.jsonl, worker.log}
//
// Every path a tenant names is resolved inside that tenant's area
// component by component with openat(O_NOFOLLOW): absolute paths, "..",
// empty components, NUL bytes and symbolic links anywhere below the root are
// refused, so neither traversal nor a planted symlink can reach another
// tenant's data or the rest of the machine.
//
// Thread-safe (no mutable state besides the filesystem).
#ifndef FJORD_DAEMON_STORAGE_STORAGE_H_
#define FJORD_DAEMON_STORAGE_STORAGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/storage/safe_dir.h"

namespace fjord::daemon {

class Storage {
 public:
  explicit Storage(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  std::string TenantDir(const std::string& tenant) const { return root_ + "/" + tenant; }
  std::string FilesDir(const std::string& tenant) const { return TenantDir(tenant) + "/files"; }
  std::string JobDir(const std::string& tenant, const std::string& job_id) const {
    return TenantDir(tenant) + "/jobs/" + job_id;
  }

  // Creates <root>/<tenant>/{files,jobs} (mode 0750). FailedPrecondition when
  // a component exists as a symlink or a non-directory.
  absl::Status EnsureTenant(const std::string& tenant) const;
  // Creates the job's directory and its checkpoints/ (0750 less the umask,
  // owned by the caller: fjordd writes job.yaml there before it hands the
  // directory to the worker's uid; the tenant's area and jobs/ too when
  // missing) and returns the job's directory opened. InvalidArgument when
  // `tenant` or `job_id` is not a plain name; errors as EnsureTenant's.
  absl::StatusOr<SafeDir> EnsureJobDir(const std::string& tenant, const std::string& job_id) const;

  // The storage root (trusted: the operator's), a tenant's area and a job's
  // directory, opened as SafeDir: below the root nothing is followed, so a
  // link a worker planted in place of a directory is an error, never a way
  // out. Unavailable when the root is not accessible ("storage root <root>
  // is not an accessible directory"); InvalidArgument when `tenant` or
  // `job_id` is not a plain name; NotFound / FailedPrecondition as
  // SafeDir::OpenDir.
  absl::StatusOr<SafeDir> OpenRoot() const;
  absl::StatusOr<SafeDir> OpenTenantDir(const std::string& tenant) const;
  absl::StatusOr<SafeDir> OpenJobDir(const std::string& tenant, const std::string& job_id) const;

  // The absolute path of the regular file `relative` names inside the
  // tenant's area. InvalidArgument (with `param`) when the path is absolute,
  // has "..", "." or empty components, crosses a symlink, does not exist or
  // is not a regular file.
  absl::StatusOr<std::string> ResolveTenantFile(const std::string& tenant,
                                                absl::string_view relative,
                                                absl::string_view param) const;

  // Bytes of the regular files under `dir` (sizes as stat reports them),
  // walked without following symlinks; 0 when `dir` does not exist.
  // Directories nested deeper than 64 are not descended into (a worker
  // cannot make the walk recurse without bound).
  static uint64_t TreeBytes(const std::string& dir);

  // Gives a tenant's area to the ids its workers run as (when those change:
  // worker.user changed, or worker.tenant_uid_range set): every directory
  // and file under <root>/<tenant> gets group `gid`, and everything inside a
  // job directory (jobs/<id>/...) also owner `uid`, which writes there.
  // Symlinks are neither followed nor changed; depth is bounded as in
  // TreeBytes. Every change goes through SafeDir::ChownEntry (O_PATH, no
  // link followed; a file with several links is refused: FailedPrecondition
  // "<path> has N hard links; refused"). Entries removed meanwhile are
  // skipped. Unavailable when the area (or the root) is missing; otherwise
  // the first failure is returned, naming the path.
  absl::Status ReownTenantArea(const std::string& tenant, uint32_t uid, uint32_t gid) const;

 private:
  std::string root_;
};

// Checks the PEFT adapter a worker left in `dir` before the daemon reports
// it as a job's result: adapter_config.json is a JSON object with a string
// "peft_type", and adapter_model.safetensors has a valid header whose
// tensors fit the file (a truncated or torn file is refused). Both are read
// with SafeDir::ReadHead: a symlink, a hard link or a non-regular file in
// their place is DataLoss too (SafeDir's FailedPrecondition message, e.g.
// "<dir>/adapter_config.json is a symbolic link; refused"). DataLoss naming
// the file and what is wrong; NotFound for a missing file; Unavailable for
// a storage error.
absl::Status VerifyAdapterDir(const SafeDir& dir);
// An evaluation job's report directory (lora/compare.h): report.json must be
// a JSON object of schema "fjord.evaluation/1" (at most 64 MiB), read through
// `dir` (no links followed). report.html is optional. DataLoss otherwise.
absl::Status VerifyReportDir(const SafeDir& dir);

// True for a file name a tenant may upload: 1..255 bytes of valid UTF-8, no
// '/', not "." or "..", no control characters (C0, DEL, C1 — U+0085
// included), no line or paragraph separator (U+2028, U+2029), no bidi or
// invisible formatting character that makes a name display as another
// (U+061C, U+200B-U+200F, U+202A-U+202E, U+2060-U+2069, U+FEFF).
bool ValidUploadFilename(absl::string_view name);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_STORAGE_STORAGE_H_
