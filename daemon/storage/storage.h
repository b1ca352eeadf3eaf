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
  // Creates the job's directory (and checkpoints/).
  absl::Status EnsureJobDir(const std::string& tenant, const std::string& job_id) const;

  // The absolute path of the regular file `relative` names inside the
  // tenant's area. InvalidArgument (with `param`) when the path is absolute,
  // has "..", "." or empty components, crosses a symlink, does not exist or
  // is not a regular file.
  absl::StatusOr<std::string> ResolveTenantFile(const std::string& tenant, absl::string_view relative,
                                                absl::string_view param) const;

  // Regular files directly in `dir` (no symlinks): name and size, sorted.
  struct Entry {
    std::string name;
    uint64_t bytes = 0;
  };
  static absl::StatusOr<std::vector<Entry>> ListRegularFiles(const std::string& dir);

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
  // TreeBytes. The first failure is returned, naming the path.
  absl::Status ReownTenantArea(const std::string& tenant, uint32_t uid, uint32_t gid) const;

 private:
  std::string root_;
};

// Checks the PEFT adapter a worker left in `dir` before the daemon reports
// it as a job's result: adapter_config.json is a JSON object with a string
// "peft_type", and adapter_model.safetensors has a valid header whose
// tensors fit the file (a truncated or torn file is refused). DataLoss
// naming the file and what is wrong; NotFound for a missing file.
absl::Status VerifyAdapterDir(const std::string& dir);

// True for a file name a tenant may upload: 1..255 bytes, no '/', no NUL,
// not "." or "..", no control characters.
bool ValidUploadFilename(absl::string_view name);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_STORAGE_STORAGE_H_
