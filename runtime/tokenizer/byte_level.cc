#include "runtime/tokenizer/byte_level.h"

#include <array>

#include "runtime/tokenizer/unicode.h"

namespace fjord::tokenizer::internal {
namespace {

struct Alphabet {
  std::array<std::string, 256> chars;
  std::array<char, 512> packed;  // byte b -> chars[b] padded to 2 bytes
  std::array<uint8_t, 256> lengths;
  std::array<int16_t, 512> bytes;  // code point (< 512) -> byte, or -1
  Alphabet() {
    bytes.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : 256u + extra++;
      AppendUtf8(cp, &chars[b]);
      bytes[cp] = static_cast<int16_t>(b);
      lengths[b] = static_cast<uint8_t>(chars[b].size());
      packed[2 * b] = chars[b][0];
      packed[2 * b + 1] = chars[b].size() > 1 ? chars[b][1] : 0;
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
  const size_t old = out->size();
  out->resize(old + 2 * bytes.size());
  char* p = out->data() + old;
  for (unsigned char b : bytes) {
    p[0] = a.packed[2 * b];
    p[1] = a.packed[2 * b + 1];
    p += a.lengths[b];
  }
  out->resize(static_cast<size_t>(p - out->data()));
}

int CharToByte(uint32_t cp) { return cp < 512 ? GetAlphabet().bytes[cp] : -1; }

}  // namespace fjord::tokenizer::internal
