// libFuzzer target: the job config parser (YAML -> JobConfig) and overrides.
// Any input must give a config or an error Status, never a crash, hang or
// sanitizer report; a parsed config must survive a ToYaml round trip.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/train/job_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<fjord::train::JobConfig> c = fjord::train::ParseJobConfig(text, "fuzz.yaml");
  if (c.ok()) {
    absl::StatusOr<fjord::train::JobConfig> again = fjord::train::ParseJobConfig(c->ToYaml(), "roundtrip");
    if (!again.ok() || again->ToYaml() != c->ToYaml()) __builtin_trap();
    fjord::train::ApplyOverride(*c, text.substr(0, 64)).IgnoreError();
  }
  return 0;
}
