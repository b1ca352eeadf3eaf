// libFuzzer target: the job config parser (YAML -> JobConfig) and overrides.
// Any input must give a config or an error Status, never a crash, hang or
// sanitizer report; a parsed config must survive a ToYaml round trip and
// pass Validate.
#include <cstddef>
#include <cstdint>
#include <string>

#include "lora/job_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<fjord::lora::JobConfig> c = fjord::lora::ParseJobConfig(text, "fuzz.yaml");
  if (c.ok()) {
    absl::StatusOr<fjord::lora::JobConfig> again =
        fjord::lora::ParseJobConfig(c->ToYaml(), "roundtrip");
    if (!again.ok() || again->ToYaml() != c->ToYaml()) __builtin_trap();
    // What parses validates (a config built in code is checked the same way).
    if (!c->Validate().ok()) __builtin_trap();
    fjord::lora::ApplyOverride(*c, text.substr(0, 64)).IgnoreError();
  }
  return 0;
}
