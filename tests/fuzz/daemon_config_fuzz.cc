// libFuzzer target: fjordd's config parser (daemon/server/config.h,
// ParseDaemonConfig). Any bytes must give a config or an InvalidArgument
// naming the file, never a crash (an uncaught yaml-cpp exception included),
// hang or sanitizer report. A parsed config keeps the documented invariants.
// Seeds: tests/fuzz/daemon_config/ (configs/fjordd.yaml's shape and variants).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "daemon/server/config.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<fjord::daemon::DaemonConfig> c =
      fjord::daemon::ParseDaemonConfig(text, "fuzz.yaml");
  if (!c.ok()) {
    Check(c.status().code() == absl::StatusCode::kInvalidArgument);
    Check(absl::StartsWith(c.status().message(), "fuzz.yaml"));
    return 0;
  }
  Check(!c->state_dir.empty() && c->state_dir[0] == '/');
  Check(!c->storage_root.empty() && c->storage_root[0] == '/');
  Check(!c->listen.empty());
  Check(c->limits.max_body_bytes + c->limits.upload_chunk_bytes <= c->limits.max_message_bytes);
  if (!c->security.curve) {
    for (const std::string& e : c->listen) Check(fjord::daemon::IsLoopbackOrIpc(e));
  }
  return 0;
}
