// The keys file: which CURVE client keys may talk to the daemon, and as whom.
//
//   # /etc/fjordd/clients.yaml
//   clients:
//     - name: acme-ci                 # shown in logs and in `ping`
//       public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"   # Z85, 40 chars
//       tenant: acme
//       role: tenant                  # tenant (default) | admin
//
// The file holds public keys only, but who may connect is decided by it: a
// keys file that group or others can write is refused.
#ifndef FJORD_DAEMON_AUTH_KEYS_H_
#define FJORD_DAEMON_AUTH_KEYS_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::daemon {

struct Principal {
  std::string key_name;
  std::string tenant;
  bool admin = false;
  const char* role() const { return admin ? "admin" : "tenant"; }
};

class KeyRing {
 public:
  // Z85 public key -> principal.
  explicit KeyRing(std::map<std::string, Principal> keys) : keys_(std::move(keys)) {}
  std::optional<Principal> Find(absl::string_view public_key) const;
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, Principal> keys_;
};

// Parses a keys file's YAML. InvalidArgument naming `name`, the entry and the
// field (a bad key, an invalid tenant name, a duplicate key, an unknown
// field).
absl::StatusOr<std::shared_ptr<const KeyRing>> ParseKeysFile(absl::string_view yaml,
                                                             absl::string_view name);
// Reads and parses; NotFound if missing, PermissionDenied if group/other-
// writable or owned by someone other than root or this process's user.
absl::StatusOr<std::shared_ptr<const KeyRing>> LoadKeysFile(const std::string& path);

// The token in a secret token file (metrics.bearer_token_file): its content
// without surrounding whitespace, 16..4096 printable ASCII characters. The
// file must be regular, closed to group and others (chmod 600) and owned by
// root or this process's user. NotFound / PermissionDenied /
// InvalidArgument naming `what` and the file.
absl::StatusOr<std::string> LoadBearerTokenFile(
    const std::string& path, absl::string_view what = "metrics.bearer_token_file");

// PermissionDenied unless `path` belongs to root or to this process's
// effective user (like sshd's StrictModes): a file another user owns can be
// changed by that user whatever its mode. `what` names it in the message
// ("keys file", "server secret key file"). NotFound if missing.
absl::Status CheckKeyFileOwner(const std::string& path, absl::string_view what);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_AUTH_KEYS_H_
