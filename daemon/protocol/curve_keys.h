// CURVE key pairs (Curve25519, Z85-encoded, 40 characters each) for fjord's
// ZeroMQ connections, and the key files that hold them.
//
// Key files: PREFIX.key holds the Z85 secret key, PREFIX.pub the public key,
// one line each. A secret key file readable or writable by group or others is
// refused (PermissionDenied), like ssh does. Secret keys are never put into
// error messages.
#ifndef FJORD_DAEMON_PROTOCOL_CURVE_KEYS_H_
#define FJORD_DAEMON_PROTOCOL_CURVE_KEYS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 chars
  std::string secret_key;  // Z85, 40 chars
};

// A fresh key pair (libzmq's zmq_curve_keypair). Internal if libzmq was built
// without CURVE.
absl::StatusOr<CurveKeyPair> GenerateCurveKeyPair();

// True for 40 characters of the Z85 alphabet that decode to 32 bytes.
bool ValidZ85Key(absl::string_view key);

// The public key for a Z85 secret key (InvalidArgument for a malformed one).
absl::StatusOr<std::string> CurvePublicKey(absl::string_view secret_key);

// Reads a secret key file and derives its public key. NotFound if missing,
// PermissionDenied if group/world can read or write it (the message says
// "chmod 600 PATH"), InvalidArgument if it holds no valid key.
absl::StatusOr<CurveKeyPair> LoadCurveSecretKeyFile(const std::string& path);
// Reads a public key file (any permissions).
absl::StatusOr<std::string> LoadCurvePublicKeyFile(const std::string& path);

// Writes PREFIX.key (mode 0600) and PREFIX.pub (0644). AlreadyExists if
// PREFIX.key exists (never overwrites a secret).
absl::Status WriteCurveKeyFiles(const std::string& prefix, const CurveKeyPair& keys);

}  // namespace fjord

#endif  // FJORD_DAEMON_PROTOCOL_CURVE_KEYS_H_
