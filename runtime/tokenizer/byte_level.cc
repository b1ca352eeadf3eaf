#include "runtime/tokenizer/byte_level.h"

#include <array>

#include "runtime/tokenizer/unicode.h"

namespace fjord::tokenizer::internal {
namespace {

struct Alphabet {
  std::array<std::string, 256> chars;
  std::array<int16_t, 512> bytes;  // code point (< 512) -> byte, or -1
  Alphabet() {
    bytes.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : 256u + extra++;
      AppendUtf8(cp, &chars[b]);
      bytes[cp] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& GetAlphabet() {
  static const Alphabet* const kAlphabet = new Alphabet();
  return *kAlphabet;
}

}  // namespace

absl::string_view ByteToChar(unsigned char byte) { return GetAlphabet().chars[byte]; }

void AppendByteLevel(absl::string_view bytes, std::string* out) {
  const Alphabet& a = GetAlphabet();
  for (unsigned char b : bytes) out->append(a.chars[b]);
}

int CharToByte(uint32_t cp) { return cp < 512 ? GetAlphabet().bytes[cp] : -1; }

}  // namespace fjord::tokenizer::internal
