// libFuzzer target: runtime/data's JSONL validator, templates and packer,
// and the held-out prompts' reader (heldout.h) on the same bytes. Any bytes
// must give a report (or a Status), never a crash, hang or sanitizer report;
// whatever loads must pack into batches that keep the packing invariants
// (targets never cross a segment, padding untrained). Knob bit 64 renders
// with a model's own (Jinja) template instead of the built-in ones (bit 128:
// one with {% generation %} markers), so provenance labels and the
// special-token split see hostile content too.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>

#include "runtime/data/dataset.h"
#include "runtime/data/fake_tokenizer.h"
#include "runtime/data/heldout.h"
#include "runtime/data/loader.h"

namespace {

// ChatML with reasoning, like Qwen3's, and the same with generation markers.
constexpr char kModelTemplate[] =
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.reasoning_content %}<think>\n{{ m.reasoning_content|trim }}\n</think>\n\n{% endif %}"
    "{{ m.content.split('</think>')[-1] }}<|im_end|>\n{% endfor %}";
constexpr char kGenerationTemplate[] =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}"
    "{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}{% else %}{{ m.content }}"
    "<|im_end|>{% endif %}\n{% endfor %}";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fjord::data;
  if (size == 0) return 0;
  // First byte picks the tokenizer and options; the rest is the file.
  const uint8_t knobs = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const FakeTokenizer tok = (knobs & 3) == 0   ? FakeTokenizer::Llama3()
                            : (knobs & 3) == 1 ? FakeTokenizer::ChatML()
                                               : FakeTokenizer({"<s>", "</s>"}, (knobs & 3) == 2);
  DataOptions options;
  options.max_length = (knobs & 4) ? 24 : 0;
  options.truncate = knobs & 8;
  options.render.train_on_inputs = knobs & 16;
  options.max_errors = 3;
  options.max_line_bytes = 4096;
  if (knobs & 64) {
    options.render.chat_template = ChatTemplate::kModel;
    options.render.model_template =
        ModelChatTemplate{(knobs & 128) ? kGenerationTemplate : kModelTemplate,
                          "fuzz/chat_template.jinja", "<s>", "<|im_end|>"};
  }
  {
    std::istringstream in(text);
    absl::StatusOr<HeldoutReport> heldout = ValidateHeldoutStream(in, "fuzz-heldout.jsonl", 3);
    if (!heldout.ok()) __builtin_trap();  // a stream always reads
    (void)heldout->Summary();
    (void)heldout->ToJson();
    std::istringstream again(text);
    absl::StatusOr<HeldoutSet> set = LoadHeldoutStream(again, "fuzz-heldout.jsonl");
    if (set.ok() != heldout->ok()) __builtin_trap();
    if (set.ok() && static_cast<int64_t>(set->questions.size()) != heldout->questions)
      __builtin_trap();
  }
  std::istringstream in(text);
  absl::StatusOr<ValidationReport> report = ValidateJsonlStream(in, "fuzz.jsonl", tok, options);
  if (!report.ok()) return 0;
  (void)report->Summary();
  (void)report->ToJson();
  std::istringstream again(text);
  absl::StatusOr<Dataset> dataset = LoadJsonlStream(again, "fuzz.jsonl", tok, options);
  if (dataset.ok() != report->ok()) __builtin_trap();
  if (!dataset.ok()) return 0;
  LoaderOptions lo;
  lo.seq_len = 16;
  lo.packing = knobs & 32;
  lo.seed = knobs;
  auto examples = std::make_shared<const std::vector<Example>>(std::move(dataset->examples));
  absl::StatusOr<std::unique_ptr<DataLoader>> loader = DataLoader::Create(examples, lo);
  if (!loader.ok()) __builtin_trap();
  for (int step = 0; step < 64; ++step) {
    absl::StatusOr<PackedBatch> b = (*loader)->NextBatch(2);
    if (!b.ok()) __builtin_trap();
    for (size_t i = 0; i < b->targets.size(); ++i) {
      const bool row_end = (i + 1) % static_cast<size_t>(b->seq_len) == 0;
      if (b->segment_ids[i] == 0 && b->targets[i] != kIgnoreIndex) __builtin_trap();
      if (b->targets[i] != kIgnoreIndex && (row_end || b->segment_ids[i + 1] != b->segment_ids[i] ||
                                            b->targets[i] != b->input_ids[i + 1])) {
        __builtin_trap();
      }
    }
    if (b->end_of_epoch) break;
  }
  const std::string state = (*loader)->SaveState();
  if (!(*loader)->RestoreState(state).ok()) __builtin_trap();
  return 0;
}
