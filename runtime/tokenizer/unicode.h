// UTF-8 and Unicode helpers for the tokenizer (internal to runtime/tokenizer).
//
// Character properties follow what Hugging Face tokenizers (Rust) uses, so
// fjord splits text where it does: IsWhiteSpace is Rust's char::is_whitespace
// (the Unicode White_Space property), IsNumeric is char::is_numeric (general
// category N*), IsWordChar is the `regex` crate's Unicode \w. Categories and
// normalization forms come from utf8proc (Debian's libutf8proc, Unicode 15).
// All functions are pure and thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_UNICODE_H_
#define FJORD_RUNTIME_TOKENIZER_UNICODE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace fjord::tokenizer::internal {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Byte length of the UTF-8 sequence that starts with `lead` in VALID UTF-8
// (1 for ASCII and, defensively, for a stray continuation byte).
inline int Utf8Length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Decodes the code point at s[*pos] of VALID UTF-8 and advances *pos.
uint32_t DecodeUtf8(absl::string_view s, size_t* pos);

// Appends `cp` (a Unicode scalar value) as UTF-8.
void AppendUtf8(uint32_t cp, std::string* out);

// Byte offset of the first invalid UTF-8 sequence in `s`, or nullopt when `s`
// is valid UTF-8 (overlong forms, surrogates and code points above U+10FFFF
// are invalid).
std::optional<size_t> FindInvalidUtf8(absl::string_view s);

// `s` with each maximal invalid subsequence replaced by U+FFFD, exactly as
// Rust's String::from_utf8_lossy and Python's bytes.decode("utf-8",
// errors="replace") do. Valid input is returned unchanged.
std::string ToValidUtf8(absl::string_view s);

// Rust's char::is_whitespace: the White_Space property.
bool IsWhiteSpace(uint32_t cp);

// Rust's char::is_numeric: general categories Nd, Nl, No.
bool IsNumeric(uint32_t cp);

// The `regex` crate's Unicode \w: Alphabetic, marks, decimal numbers,
// connector punctuation, join controls.
bool IsWordChar(uint32_t cp);

// Unicode normalization forms (utf8proc, stable per Unicode's policy).
enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// `s` (valid UTF-8) in normal form `form`. Text that is already normalized is
// returned unchanged without a utf8proc call where cheap to tell (ASCII; for
// NFC, text below U+0300).
std::string Normalize(absl::string_view s, NormalForm form);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_UNICODE_H_
