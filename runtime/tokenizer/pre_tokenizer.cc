#include "runtime/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {
namespace {

// GPT-2's pre-tokenization regex (ByteLevel with use_regex).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

const Regex& Gpt2Regex() {
  static const Regex* const kRegex = new Regex(*Regex::Compile(kGpt2Pattern));
  return *kRegex;
}

// Appends the non-empty `spans` of `piece` to *out.
void EmitSpans(const Piece& piece, const std::vector<Span>& spans, std::vector<Piece>* out) {
  for (const Span& s : spans) {
    if (s.second <= s.first) continue;
    out->push_back(Piece{piece.text.substr(s.first, s.second - s.first),
                         piece.at_start && s.first == 0});
  }
}

// Each character satisfying `pred` as its own match (HF's Fn(char) pattern).
void FindChars(absl::string_view text, const std::function<bool(uint32_t)>& pred,
               std::vector<Span>* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    if (pred(DecodeUtf8(text, &pos))) out->emplace_back(start, pos);
  }
}

// Applies `split(text, &spans)` to every piece.
template <typename SplitFn>
void SplitEach(std::vector<Piece>* pieces, SplitFn split) {
  std::vector<Piece> out;
  out.reserve(pieces->size() * 2);
  std::vector<Span> spans;
  for (const Piece& piece : *pieces) {
    spans.clear();
    split(piece.text, &spans);
    EmitSpans(piece, spans, &out);
  }
  *pieces = std::move(out);
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Span> matches;
    SplitEach(pieces, [&](const std::string& text, std::vector<Span>* spans) {
      matches.clear();
      pattern_.FindAll(text, &matches);
      *spans = SplitSpans(text.size(), matches, behavior_, invert_);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces->size() * 2);
    std::vector<Span> matches;
    std::string spaced;
    for (const Piece& piece : *pieces) {
      const std::string* text = &piece.text;
      if (add_prefix_space_ && (text->empty() || (*text)[0] != ' ')) {
        spaced = absl::StrCat(" ", *text);
        text = &spaced;
      }
      if (!use_regex_) {
        Piece mapped{std::string(), piece.at_start};
        AppendByteLevel(*text, &mapped.text);
        if (!mapped.text.empty()) out.push_back(std::move(mapped));
        continue;
      }
      matches.clear();
      Gpt2Regex().FindAll(*text, &matches);
      for (const Span& s : SplitSpans(text->size(), matches, SplitBehavior::kIsolated, false)) {
        if (s.second <= s.first) continue;
        Piece mapped{std::string(), piece.at_start && s.first == 0};
        AppendByteLevel(absl::string_view(*text).substr(s.first, s.second - s.first), &mapped.text);
        out.push_back(std::move(mapped));
      }
    }
    *pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces->size() * 2);
    std::vector<Span> matches;
    for (Piece& piece : *pieces) {
      Piece p{absl::StrReplaceAll(piece.text, {{" ", replacement_}}), piece.at_start};
      const bool prepend =
          scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start);
      if (prepend && !absl::StartsWith(p.text, replacement_)) p.text.insert(0, replacement_);
      if (!split_) {
        if (!p.text.empty()) out.push_back(std::move(p));
        continue;
      }
      matches.clear();
      FindAllLiteral(replacement_, p.text, &matches);
      EmitSpans(p, SplitSpans(p.text.size(), matches, SplitBehavior::kMergedWithNext, false),
                &out);
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Span> matches;
    SplitEach(pieces, [&](const std::string& text, std::vector<Span>* spans) {
      matches.clear();
      FindChars(text, IsNumeric, &matches);
      *spans = SplitSpans(text.size(), matches,
                          individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                          false);
    });
  }

 private:
  bool individual_;
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void Apply(std::vector<Piece>* pieces) const override {
    std::vector<Span> matches;
    SplitEach(pieces, [&](const std::string& text, std::vector<Span>* spans) {
      matches.clear();
      FindChars(text, IsWhiteSpace, &matches);
      *spans = SplitSpans(text.size(), matches, SplitBehavior::kRemoved, false);
    });
  }
};

// HF's Whitespace: the matches of \w+|[^\w\s]+ (Rust regex, Unicode).
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  void Apply(std::vector<Piece>* pieces) const override {
    SplitEach(pieces, [&](const std::string& text, std::vector<Span>* spans) {
      size_t pos = 0;
      while (pos < text.size()) {
        const size_t start = pos;
        const uint32_t cp = DecodeUtf8(text, &pos);
        if (IsWhiteSpace(cp)) continue;
        const bool word = IsWordChar(cp);
        size_t end = pos;
        while (end < text.size()) {
          size_t next = end;
          const uint32_t c = DecodeUtf8(text, &next);
          if (word ? !IsWordChar(c) : (IsWordChar(c) || IsWhiteSpace(c))) break;
          end = next;
        }
        spans->emplace_back(start, end);
        pos = end;
      }
    });
  }
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void Apply(std::vector<Piece>* pieces) const override {
    for (const auto& p : parts_) p->Apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& value, absl::string_view path) {
  FJORD_ASSIGN_OR_RETURN(std::string b, GetString(value, path, "behavior"));
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return FieldError(JoinPath(path, "behavior"),
                    absl::StrCat("unknown behavior \"", b,
                                 "\" (expected Removed, Isolated, MergedWithPrevious, "
                                 "MergedWithNext or Contiguous)"));
}

}  // namespace

std::vector<Span> SplitSpans(size_t text_size, const std::vector<Span>& matches,
                             SplitBehavior behavior, bool invert) {
  // Every part of the text, marked as match or not (HF find_matches).
  std::vector<std::pair<Span, bool>> parts;
  if (text_size == 0) {
    parts.push_back({{0, 0}, false});
  } else {
    parts.reserve(matches.size() * 2 + 1);
    size_t prev = 0;
    for (const Span& m : matches) {
      if (prev != m.first) parts.push_back({{prev, m.first}, false});
      parts.push_back({m, true});
      prev = m.second;
    }
    if (prev != text_size) parts.push_back({{prev, text_size}, false});
  }
  if (invert) {
    for (auto& p : parts) p.second = !p.second;
  }
  std::vector<Span> out;
  out.reserve(parts.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& p : parts) out.push_back(p.first);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& p : parts) {
        if (!p.second) out.push_back(p.first);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const auto& [span, is_match] : parts) {
        if (is_match == previous_match && !out.empty()) {
          out.back().second = span.second;
        } else {
          out.push_back(span);
        }
        previous_match = is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& [span, is_match] : parts) {
        if (is_match && !previous_match && !out.empty()) {
          out.back().second = span.second;
        } else {
          out.push_back(span);
        }
        previous_match = is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        const auto& [span, is_match] = *it;
        if (is_match && !previous_match && !out.empty()) {
          out.back().first = span.first;
        } else {
          out.push_back(span);
        }
        previous_match = is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& value,
                                                                absl::string_view path) {
  FJORD_ASSIGN_OR_RETURN(std::string type, GetType(value, path));
  if (type == "Split") {
    const Json* pattern = FindField(value, "pattern");
    if (pattern == nullptr) return FieldError(JoinPath(path, "pattern"), "missing");
    FJORD_ASSIGN_OR_RETURN(Pattern parsed, Pattern::Parse(*pattern, JoinPath(path, "pattern")));
    FJORD_ASSIGN_OR_RETURN(const SplitBehavior behavior, ParseBehavior(value, path));
    FJORD_ASSIGN_OR_RETURN(const bool invert, GetBool(value, path, "invert", false));
    return std::make_unique<SplitPreTokenizer>(std::move(parsed), behavior, invert);
  }
  if (type == "ByteLevel") {
    FJORD_ASSIGN_OR_RETURN(const bool prefix, GetBool(value, path, "add_prefix_space", true));
    FJORD_ASSIGN_OR_RETURN(const bool use_regex, GetBool(value, path, "use_regex", true));
    FJORD_RETURN_IF_ERROR(GetBool(value, path, "trim_offsets", true).status());
    return std::make_unique<ByteLevelPreTokenizer>(prefix, use_regex);
  }
  if (type == "Metaspace") {
    FJORD_ASSIGN_OR_RETURN(std::string replacement, GetString(value, path, "replacement"));
    size_t pos = 0;
    if (replacement.empty() || (DecodeUtf8(replacement, &pos), pos != replacement.size())) {
      return FieldError(JoinPath(path, "replacement"),
                        absl::StrCat("expected a single character, got \"", replacement, "\""));
    }
    FJORD_ASSIGN_OR_RETURN(const bool legacy_prefix,
                           GetBool(value, path, "add_prefix_space", true));
    FJORD_ASSIGN_OR_RETURN(std::optional<std::string> scheme_name,
                           GetOptionalString(value, path, "prepend_scheme"));
    PrependScheme scheme = legacy_prefix ? PrependScheme::kAlways : PrependScheme::kNever;
    if (scheme_name) {
      if (*scheme_name == "always") {
        scheme = PrependScheme::kAlways;
      } else if (*scheme_name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (*scheme_name == "never") {
        scheme = PrependScheme::kNever;
      } else {
        return FieldError(JoinPath(path, "prepend_scheme"),
                          absl::StrCat("unknown prepend_scheme \"", *scheme_name,
                                       "\" (expected always, first or never)"));
      }
    }
    FJORD_ASSIGN_OR_RETURN(const bool split, GetBool(value, path, "split", true));
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
  }
  if (type == "Digits") {
    FJORD_ASSIGN_OR_RETURN(const bool individual,
                           GetBool(value, path, "individual_digits", false));
    return std::make_unique<DigitsPreTokenizer>(individual);
  }
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "Sequence") {
    const std::string field = JoinPath(path, "pretokenizers");
    const Json* list = FindField(value, "pretokenizers");
    if (list == nullptr) return FieldError(field, "missing");
    if (!list->is_array()) {
      return FieldError(field, absl::StrCat("expected an array, got ", JsonTypeName(*list)));
    }
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      FJORD_ASSIGN_OR_RETURN(auto part, ParsePreTokenizer((*list)[i], IndexPath(field, i)));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  return FieldError(JoinPath(path, "type"),
                    absl::StrCat("unsupported pre_tokenizer \"", type,
                                 "\" (fjord supports Split, ByteLevel, Metaspace, Digits, "
                                 "Whitespace, WhitespaceSplit, Sequence)"));
}

}  // namespace fjord::tokenizer::internal
