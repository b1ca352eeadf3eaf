#include "runtime/tokenizer/hf_unicode.h"

#include <algorithm>
#include <iterator>

namespace fjord::tokenizer::internal {
namespace {

#include "runtime/tokenizer/hf_unicode_tables.inc"

bool InRanges(const CodePointRange* ranges, size_t n, uint32_t cp) {
  const CodePointRange* end = ranges + n;
  const CodePointRange* it = std::upper_bound(
      ranges, end, cp, [](uint32_t c, const CodePointRange& r) { return c < r.first; });
  return it != ranges && (it - 1)->last >= cp;
}

}  // namespace

const ClassDelta* FindClassDelta(absl::string_view name) {
  for (const ClassDelta& d : kClassDeltas) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

bool NormalizationMayChange(uint32_t cp, bool compose, bool compat) {
  if (cp < 0x80) return false;
  if (compose) {
    return compat ? InRanges(kNfkcMaybe, kNfkcMaybeSize, cp)
                  : InRanges(kNfcMaybe, kNfcMaybeSize, cp);
  }
  return compat ? InRanges(kNfkdMaybe, kNfkdMaybeSize, cp) : InRanges(kNfdMaybe, kNfdMaybeSize, cp);
}

bool IsHfNormalizationInert(uint32_t cp, bool compat) {
  if (cp < 0x80) return false;
  return compat ? InRanges(kHfInertCompat, kHfInertCompatSize, cp)
                : InRanges(kHfInertCanonical, kHfInertCanonicalSize, cp);
}

}  // namespace fjord::tokenizer::internal
