// libFuzzer target: fjordd's keys file parser (daemon/auth/keys.h,
// ParseKeysFile), which decides who may connect. Any bytes must give a key
// ring or an InvalidArgument naming the file, never a crash (an uncaught
// yaml-cpp exception included), hang or sanitizer report. Every key in a
// parsed ring is a valid Z85 key with a valid tenant.
// Seeds: tests/fuzz/keys_file/.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "daemon/auth/keys.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::shared_ptr<const fjord::daemon::KeyRing>> ring =
      fjord::daemon::ParseKeysFile(text, "fuzz-keys.yaml");
  if (!ring.ok()) {
    Check(ring.status().code() == absl::StatusCode::kInvalidArgument);
    Check(absl::StartsWith(ring.status().message(), "fuzz-keys.yaml"));
    return 0;
  }
  // A key that is not Z85 is never found.
  Check(!(*ring)->Find("").has_value());
  Check(!(*ring)->Find(std::string(40, '\0')).has_value());
  return 0;
}
