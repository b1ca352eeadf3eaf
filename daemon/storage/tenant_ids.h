// Per-tenant worker ids, allocated on the shared storage root so that every
// node's fjordd gives a tenant the same one (worker.tenant_uid_range).
//
// Each tenant's workers run as their own uid (and a gid of the same number),
// so a worker compromised through a parser bug can read only its own
// tenant's area. The mapping lives in <root>/.fjord-tenant-ids/<id>, a file
// holding the tenant's name, mode 0600 in a 0700 directory (tenant names
// start with [a-z0-9], so the directory can never be a tenant's area):
//
// - An id is claimed by writing a complete file under a temporary name and
//   link(2)ing it to <id>: link fails with EEXIST atomically, on local file
//   systems and on NFS, so two nodes can never claim one id, and a reader
//   never sees a half-written claim.
// - A tenant's ids are probed from hash(tenant) onwards (open addressing);
//   claims are never removed, so the first claim naming the tenant along
//   that sequence is its id, and an unclaimed slot means it has none yet.
//
// Thread-safe.
#ifndef FJORD_DAEMON_STORAGE_TENANT_IDS_H_
#define FJORD_DAEMON_STORAGE_TENANT_IDS_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace fjord::daemon {

class TenantIds {
 public:
  // Ids first .. first + count - 1 (count >= 1).
  TenantIds(std::string storage_root, uint32_t first, uint32_t count);

  // The tenant's id, claiming the next free one on first use.
  // ResourceExhausted when every id of the range belongs to another tenant;
  // Unavailable / PermissionDenied when the claims cannot be read or written.
  absl::StatusOr<uint32_t> Resolve(const std::string& tenant);

  // Where the claims live.
  std::string dir() const { return dir_; }

 private:
  absl::StatusOr<uint32_t> Claim(const std::string& tenant);

  std::string dir_;
  uint32_t first_, count_;
  std::mutex mu_;
  std::map<std::string, uint32_t> cache_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_STORAGE_TENANT_IDS_H_
