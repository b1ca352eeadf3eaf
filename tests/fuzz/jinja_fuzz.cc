// libFuzzer target: fjord's Jinja (runtime/data/jinja.h). The input bytes are
// a template, rendered with a fixed chat context (messages with a system
// prompt, tool calls and reasoning, tools, bos/eos tokens). Any bytes must
// parse and render or give InvalidArgument / ResourceExhausted, never a crash,
// hang or sanitizer report; a render's origin spans must lie inside its text,
// sorted and non-overlapping. Budgets are small so hostile templates stop
// fast. Seeds: tests/fuzz/jinja/ (the real templates of ../shared/models and
// a few constructs).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "runtime/data/jinja.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

const nlohmann::ordered_json& Context() {
  static const auto* context = new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Weather in Oslo? caf\u00e9 \ud83d\ude42"},
      {"role": "assistant", "content": "<think>\nlook it up\n</think>\n\n",
       "reasoning_content": "look it up",
       "tool_calls": [{"id": "call12345", "type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
      {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": -3}"},
      {"role": "assistant", "content": "It is -3 C."}],
    "tools": [{"type": "function", "function": {"name": "get_weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "enable_thinking": false
  })"));
  return *context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fjord::data;
  if (size > 64 * 1024) return 0;
  JinjaOptions options;
  options.max_steps = 200'000;
  options.max_output_bytes = 1 << 20;
  options.max_depth = 100;
  const std::string source(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<JinjaTemplate> tmpl = JinjaTemplate::Parse(source, options);
  if (!tmpl.ok()) {
    Check(absl::IsInvalidArgument(tmpl.status()));
    return 0;
  }
  absl::StatusOr<JinjaOutput> out = tmpl->RenderWithOrigins(Context());
  if (!out.ok()) {
    Check(absl::IsInvalidArgument(out.status()) || absl::IsResourceExhausted(out.status()));
    return 0;
  }
  Check(static_cast<int64_t>(out->text.size()) <= options.max_output_bytes);
  size_t previous_end = 0;
  for (const OriginSpan& span : out->origins) {
    Check(span.begin >= previous_end && span.begin < span.end && span.end <= out->text.size());
    Check(span.message >= 0 && span.message < 5);
    previous_end = span.end;
  }
  return 0;
}
