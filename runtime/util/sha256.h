// SHA-256 (libsodium's crypto_hash_sha256), as lowercase hex.
#ifndef FJORD_RUNTIME_UTIL_SHA256_H_
#define FJORD_RUNTIME_UTIL_SHA256_H_

#include <sodium.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/util/env.h"

namespace fjord {

// Hex digest (64 lowercase characters) of data.
std::string Sha256Hex(absl::string_view data);

// Streaming hash: Update any number of times, then FinalHex once. After
// FinalHex the object starts over as a fresh hash. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  void Update(absl::string_view data);
  std::string FinalHex();

 private:
  crypto_hash_sha256_state state_;
};

// Hex digest of a file's contents, read through env (null: Env::Default())
// by mapping it. Errors: the Env's (NotFound naming the path, ...).
absl::StatusOr<std::string> Sha256File(Env* env, const std::string& path);

}  // namespace fjord

#endif  // FJORD_RUNTIME_UTIL_SHA256_H_
