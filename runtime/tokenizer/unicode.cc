#include "runtime/tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>

#include "runtime/tokenizer/hf_unicode.h"

namespace fjord::tokenizer::internal {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid; on 0,
// *bad is the length of the maximal invalid subpart (>= 1) to replace.
size_t ValidSequenceAt(absl::string_view s, size_t i, size_t* bad) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    *bad = 1;
    return 0;
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const unsigned char b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  if (k == need) return need;
  *bad = k;  // the lead byte and the continuation bytes that fit
  return 0;
}

}  // namespace

uint32_t DecodeUtf8(absl::string_view s, size_t* pos) {
  const unsigned char c = static_cast<unsigned char>(s[*pos]);
  const int n = Utf8Length(c);
  if (n == 1 || *pos + n > s.size()) {
    ++*pos;
    return c;
  }
  uint32_t cp = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[*pos + k]) & 0x3F);
  *pos += n;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::optional<size_t> FindInvalidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      __builtin_memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= s.size()) break;
    size_t bad = 0;
    const size_t n = ValidSequenceAt(s, i, &bad);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

std::string ToValidUtf8(absl::string_view s) {
  std::optional<size_t> first = FindInvalidUtf8(s);
  if (!first) return std::string(s);
  std::string out(s.substr(0, *first));
  size_t i = *first;
  while (i < s.size()) {
    size_t bad = 0;
    const size_t n = ValidSequenceAt(s, i, &bad);
    if (n == 0) {
      AppendUtf8(kReplacementChar, &out);
      i += bad;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

bool IsWhiteSpace(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool IsNumeric(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool IsWordChar(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
           cp == '_';
  }
  if (cp == 0x200C || cp == 0x200D) return true;  // Join_Control
  // Other_Alphabetic symbols (circled and squared Latin letters).
  if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) ||
      (cp >= 0x1F150 && cp <= 0x1F169) || (cp >= 0x1F170 && cp <= 0x1F189)) {
    return true;
  }
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

std::string Normalize(absl::string_view s, NormalForm form) {
  // Text that no normal form changes: ASCII; for NFC, anything below U+0300
  // (the first combining mark), since composition needs a combining mark.
  const unsigned char limit = form == NormalForm::kNfc ? 0xCC : 0x80;
  bool unchanged = true;
  for (unsigned char c : s) {
    if (c >= limit) {
      unchanged = false;
      break;
    }
  }
  if (unchanged) return std::string(s);
  int options = UTF8PROC_STABLE;
  bool compat = false;
  switch (form) {
    case NormalForm::kNfc:
      options |= UTF8PROC_COMPOSE;
      break;
    case NormalForm::kNfd:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case NormalForm::kNfkc:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      compat = true;
      break;
    case NormalForm::kNfkd:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      compat = true;
      break;
  }
  auto map = [options](absl::string_view piece, std::string* out) {
    if (piece.empty()) return;
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(piece.data()),
                                            static_cast<utf8proc_ssize_t>(piece.size()), &mapped,
                                            static_cast<utf8proc_option_t>(options));
    if (n < 0) {  // only on invalid UTF-8 or out of memory: leave the text as it is
      out->append(piece.data(), piece.size());
    } else {
      out->append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
    }
    std::free(mapped);
  };
  const bool compose = form == NormalForm::kNfc || form == NormalForm::kNfkc;
  bool may_change = false;
  for (size_t pos = 0; pos < s.size() && !may_change;) {
    may_change = NormalizationMayChange(DecodeUtf8(s, &pos), compose, compat);
  }
  if (!may_change) return std::string(s);
  // HF's normalizer does not know some characters utf8proc does: it leaves
  // them alone and nothing composes or reorders across them, so normalize
  // the text between them.
  std::string result;
  result.reserve(s.size());
  size_t start = 0, pos = 0;
  while (pos < s.size()) {
    const size_t at = pos;
    const uint32_t cp = DecodeUtf8(s, &pos);
    if (!IsHfNormalizationInert(cp, compat)) continue;
    map(s.substr(start, at - start), &result);
    result.append(s.data() + at, pos - at);
    start = pos;
  }
  map(s.substr(start), &result);
  return result;
}

}  // namespace fjord::tokenizer::internal
