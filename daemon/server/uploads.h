// Uploads: the files being uploaded (file.upload.begin/chunk/finish), in
// memory: a half-written upload belongs to the daemon that took it, and
// is dropped when it goes idle (limits.upload_idle_s) or the daemon
// restarts (TenantAreas::DropUnfinishedUploads removes its file then).
//
// Not thread-safe: the server loop owns it.
#ifndef FJORD_DAEMON_SERVER_UPLOADS_H_
#define FJORD_DAEMON_SERVER_UPLOADS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/auth/keys.h"
#include "daemon/storage/safe_dir.h"
#include "daemon/storage/tenant_areas.h"
#include "runtime/util/sha256.h"

namespace fjord::daemon {

struct Upload {
  std::string tenant;
  std::string filename;
  uint64_t bytes = 0;  // announced
  std::string sha256;  // announced
  uint64_t received = 0;
  Sha256 hasher;  // of what was received
  UniqueFd fd;    // files/.upload-<node>-<id>, written as chunks come
  std::string path;
  int64_t last_ms = 0;  // when the last chunk came
};

class Uploads {
 public:
  // Starts tracking upload `id`.
  void Add(const std::string& id, Upload upload) { uploads_.emplace(id, std::move(upload)); }
  // The upload if `principal` may touch it; NotFound (param upload_id)
  // otherwise, as for an id that does not exist.
  absl::StatusOr<Upload*> Find(const Principal& principal, const std::string& id);
  bool Has(const std::string& id) const { return uploads_.count(id) > 0; }
  // Stops tracking it (the file stays: it was renamed into place).
  void Finish(const std::string& id) { uploads_.erase(id); }
  // Stops tracking it and removes its file.
  void Drop(const std::string& id);
  // Drops the ones idle for longer than `idle_ms` (now: `now_ms`).
  void ExpireIdle(int64_t now_ms, int64_t idle_ms);
  // How many a tenant has in progress.
  int CountFor(const std::string& tenant) const;
  // A tenant's uploads for its storage usage: the announced bytes, one entry
  // each, and their file names.
  TenantAreas::Uploading InFlight(const std::string& tenant) const;

 private:
  std::map<std::string, Upload> uploads_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_UPLOADS_H_
