// libFuzzer target: the tokenizer.json loader. Any bytes must load or give an
// InvalidArgument naming the input, never a crash, hang or sanitizer report;
// whatever loads must encode and decode tricky texts (invalid UTF-8, special
// spellings, long runs) into ids in [0, vocab_size) and valid UTF-8.
// Seeds: tests/fuzz/tokenizer/ (small Llama 3-, Qwen2-, GPT-2-, Llama 2- and
// Metaspace-shaped files made by tests/fuzz/make_tokenizer_seeds.py).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace {

const std::vector<std::string>& Texts() {
  static const auto* kTexts = new std::vector<std::string>{
      "",
      "Hello world! It's 12345 <|eot_id|> caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82",
      "  \n\n\t x\xC2\xA0y\xE3\x80\x80z <s></s><unk> <0x41>",
      "\xFF\xFE a\xE4\xBD b\xED\xA0\x80 c",
      std::string(300, ' ') + std::string(300, 'a') + std::string(50, '\n'),
  };
  return *kTexts;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using fjord::tokenizer::EncodeOptions;
  using fjord::tokenizer::Tokenizer;
  const std::string json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json, "fuzz.json");
  if (!tok.ok()) {
    Check(tok.status().code() == absl::StatusCode::kInvalidArgument);
    Check(absl::StartsWith(tok.status().message(), "fuzz.json: "));
    return 0;
  }
  const Tokenizer& t = **tok;
  Check(t.vocab_size() >= 0);
  for (const std::string& text : Texts()) {
    for (int mode = 0; mode < 4; ++mode) {
      EncodeOptions options;
      options.add_special_tokens = mode & 1;
      options.split_special_tokens = mode & 2;
      const std::vector<int32_t> ids = t.Encode(text, options);
      for (int32_t id : ids) Check(id >= 0 && id < t.vocab_size());
      Check(ids == t.Encode(text, options));  // deterministic (cache)
      for (bool skip : {false, true}) {
        const std::string back = t.Decode(ids, skip);
        Check(!fjord::tokenizer::internal::FindInvalidUtf8(back).has_value());
      }
    }
  }
  for (int32_t id : {-1, 0, 1, t.vocab_size() - 1, t.vocab_size()}) {
    (void)t.IdToToken(id);
    (void)t.IsSpecial(id);
  }
  (void)t.bos_id();
  return 0;
}
