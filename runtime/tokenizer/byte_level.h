// GPT-2's byte-level alphabet: each byte 0..255 as one printable character
// (bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, the others
// for U+0100 onwards in byte order; the space is "Ġ", U+0120). Internal to
// runtime/tokenizer; thread-safe (immutable tables).
#ifndef FJORD_RUNTIME_TOKENIZER_BYTE_LEVEL_H_
#define FJORD_RUNTIME_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace fjord::tokenizer::internal {

// The character standing for `byte`, UTF-8 encoded (1 or 2 bytes).
absl::string_view ByteToChar(unsigned char byte);

// Appends the byte-level spelling of `bytes` to *out.
void AppendByteLevel(absl::string_view bytes, std::string* out);

// The byte that code point `cp` stands for, or -1 when `cp` is not in the
// alphabet.
int CharToByte(uint32_t cp);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_BYTE_LEVEL_H_
