// libFuzzer target: encoding and decoding arbitrary bytes with real-shaped
// tokenizers (tests/fuzz/tokenizer/{llama3,qwen2,gpt2,llama2,metaspace}.json,
// loaded once). The first byte picks the tokenizer and options; the rest is
// the text. Checks: no crash, hang or sanitizer report; ids in range;
// deterministic; with special-token matching off, no special token that only
// matching can produce; byte-level tokenizers round-trip the text (repaired
// to UTF-8; Qwen2 up to NFC); decoding any ids gives valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace {

using fjord::tokenizer::Tokenizer;
namespace internal = fjord::tokenizer::internal;

struct Loaded {
  const char* name;
  std::unique_ptr<Tokenizer> tok;
};

std::vector<Loaded>& Tokenizers() {
  static auto* kTokenizers = [] {
    auto* out = new std::vector<Loaded>;
    for (const char* name : {"llama3", "qwen2", "gpt2", "llama2", "metaspace"}) {
      auto tok = Tokenizer::FromFile(std::string("tests/fuzz/tokenizer/") + name + ".json");
      if (!tok.ok()) __builtin_trap();  // run from the repository root (fuzz.sh does)
      out->push_back(Loaded{name, *std::move(tok)});
    }
    return out;
  }();
  return *kTokenizers;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t knobs = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const Loaded& l = Tokenizers()[knobs % Tokenizers().size()];
  const Tokenizer& t = *l.tok;
  fjord::tokenizer::EncodeOptions options;
  options.add_special_tokens = knobs & 8;
  options.split_special_tokens = knobs & 16;
  const std::vector<int32_t> ids = t.Encode(text, options);
  for (int32_t id : ids) Check(id >= 0 && id < t.vocab_size());
  Check(ids == t.Encode(text, options));
  const std::string name = l.name;
  const bool byte_level = name == "llama3" || name == "qwen2";
  if (options.split_special_tokens && byte_level) {
    // Their specials are outside the BPE vocabulary: only matching makes them.
    const std::vector<int32_t> specials = t.SpecialIds();
    for (size_t i = options.add_special_tokens ? 1 : 0; i < ids.size(); ++i) {
      for (int32_t s : specials) Check(ids[i] != s);
    }
  }
  if (byte_level && !options.add_special_tokens) {
    std::string expected = internal::ToValidUtf8(text);
    if (name == "qwen2") expected = internal::Normalize(expected, internal::NormalForm::kNfc);
    Check(t.Decode(ids) == expected);
  }
  // Decode ids made of the input bytes.
  std::vector<int32_t> random;
  for (size_t i = 1; i + 3 < size && random.size() < 64; i += 4) {
    random.push_back(static_cast<int32_t>(data[i] | data[i + 1] << 8 | data[i + 2] << 16) %
                         (t.vocab_size() + 3) -
                     1);
  }
  for (bool skip : {false, true}) {
    Check(!internal::FindInvalidUtf8(t.Decode(random, skip)).has_value());
    Check(!internal::FindInvalidUtf8(t.Decode(ids, skip)).has_value());
  }
  return 0;
}
