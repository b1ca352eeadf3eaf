#include "daemon/server/uploads.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"

namespace fjord::daemon {

absl::StatusOr<Upload*> Uploads::Find(const Principal& principal, const std::string& id) {
  auto it = uploads_.find(id);
  if (it == uploads_.end() || (it->second.tenant != principal.tenant && !principal.admin)) {
    return protocol::Error(absl::StatusCode::kNotFound,
                           absl::StrCat("no upload '", id, "' in progress"), "upload_id");
  }
  return &it->second;
}

void Uploads::Drop(const std::string& id) {
  auto it = uploads_.find(id);
  if (it == uploads_.end()) return;
  ::unlink(it->second.path.c_str());  // files/ is root's: no worker can plant anything there
  uploads_.erase(it);
}

void Uploads::ExpireIdle(int64_t now_ms, int64_t idle_ms) {
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    if (now_ms - it->second.last_ms > idle_ms) {
      ::unlink(it->second.path.c_str());
      it = uploads_.erase(it);
    } else {
      ++it;
    }
  }
}

int Uploads::CountFor(const std::string& tenant) const {
  int n = 0;
  for (const auto& [id, u] : uploads_) n += u.tenant == tenant;
  return n;
}

TenantAreas::Uploading Uploads::InFlight(const std::string& tenant) const {
  TenantAreas::Uploading out;
  for (const auto& [id, u] : uploads_) {
    if (u.tenant != tenant) continue;
    out.usage.bytes += u.bytes;
    ++out.usage.entries;
    out.file_names.insert(u.path.substr(u.path.rfind('/') + 1));
  }
  return out;
}

}  // namespace fjord::daemon
