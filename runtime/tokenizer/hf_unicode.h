// Where Hugging Face tokenizers' Unicode data differs from the libraries fjord
// uses (internal to runtime/tokenizer). The tables are generated from the
// pinned `tokenizers` by tools/tokenizer/gen_unicode_tables.py
// (hf_unicode_tables.inc); tests/interop/test_tokenizer.py checks every code
// point against HF.
//   - HF's Oniguruma knows a newer Unicode (16) than Debian's PCRE2 10.42 (14):
//     per regex class, the code points Oniguruma adds or lacks.
//   - HF normalizes with old tables: code points whose decomposition,
//     combining class or compositions it does not know are "inert" for it.
// Immutable data; thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_HF_UNICODE_H_
#define FJORD_RUNTIME_TOKENIZER_HF_UNICODE_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace fjord::tokenizer::internal {

struct CodePointRange {
  uint32_t first;
  uint32_t last;  // inclusive
};

// For a regex class ("L", "Nd", ... for \p{..}; "w" for \w and "w@class" for
// \w inside a bracket class, where Oniguruma's differs; "d" for \d): the
// code points Oniguruma matches beyond PCRE2's pattern (extra) and those of
// PCRE2's pattern it does not match (missing).
struct ClassDelta {
  const char* name;
  const CodePointRange* extra;
  size_t extra_size;
  const CodePointRange* missing;
  size_t missing_size;
};

// The delta of class `name`, or nullptr when fjord has none for it (the class
// is then left to PCRE2).
const ClassDelta* FindClassDelta(absl::string_view name);

// Whether HF's NFC/NFD (compat: NFKC/NFKD) leaves `cp` alone and composes
// nothing across it, though utf8proc would not.
bool IsHfNormalizationInert(uint32_t cp, bool compat);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_HF_UNICODE_H_
