// libFuzzer target: the PEFT adapter loader's parsing (adapter_config.json ->
// LoraConfig -> the modules it adapts on a fixed tiny Llama, and the
// adapter_model.safetensors header checked against them). Input: the config
// text, a NUL byte, then the safetensors file's bytes.
// Any input must give a result or an error Status, never a crash, hang or
// sanitizer report; a parsed config must survive AdapterConfigJson.
#include <cstddef>
#include <cstdint>
#include <string>

#include "lora/lora_config.h"
#include "lora/peft_format.h"
#include "runtime/io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string config_text = input.substr(0, nul);
  const std::string weights = nul == std::string::npos ? std::string() : input.substr(nul + 1);

  // 2 layers, hidden 16, q 16, kv 8, intermediate 24, vocab 32.
  const std::vector<fjord::lora::ModuleInfo> modules =
      fjord::lora::DecoderModules(2, 16, 16, 8, 24, 32);
  absl::StatusOr<fjord::lora::LoraConfig> config =
      fjord::lora::ParseAdapterConfig(config_text, "fuzz/adapter_config.json");
  if (!config.ok()) return 0;
  absl::StatusOr<std::vector<fjord::lora::AdaptedModule>> adapted =
      fjord::lora::ResolveTargets(*config, modules);

  // What fjord writes for a config it read must read back to the same modules.
  if (adapted.ok()) {
    const std::string written = fjord::lora::AdapterConfigJson(*config, *adapted);
    absl::StatusOr<fjord::lora::LoraConfig> again =
        fjord::lora::ParseAdapterConfig(written, "roundtrip");
    if (!again.ok()) __builtin_trap();
    absl::StatusOr<std::vector<fjord::lora::AdaptedModule>> again_adapted =
        fjord::lora::ResolveTargets(*again, modules);
    if (!again_adapted.ok() || again_adapted->size() != adapted->size()) __builtin_trap();
    for (size_t i = 0; i < adapted->size(); ++i) {
      const auto& a = (*adapted)[i];
      const auto& b = (*again_adapted)[i];
      if (a.path != b.path || a.r != b.r) __builtin_trap();
    }
  }
  absl::StatusOr<fjord::io::SafetensorsHeader> header =
      fjord::io::ParseSafetensorsHeader(weights, "fuzz/adapter_model.safetensors");
  if (header.ok() && adapted.ok()) {
    fjord::lora::CheckAdapterTensors(*header, *adapted, "fuzz/adapter_model.safetensors")
        .IgnoreError();
  }
  return 0;
}
