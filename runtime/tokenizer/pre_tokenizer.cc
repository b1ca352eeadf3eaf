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

constexpr size_t kMaxKeptBytes = size_t{16} << 20;

// GPT-2's pre-tokenization regex (ByteLevel with use_regex).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

const Regex& Gpt2Regex() {
  static const Regex* const kRegex = new Regex(*Regex::Compile(kGpt2Pattern));
  return *kRegex;
}

// Appends the non-empty `spans` of piece `i` of `in` to *out.
void EmitSpans(const Pieces& in, size_t i, const std::vector<Span>& spans, Pieces* out) {
  const absl::string_view text = in[i];
  for (const Span& s : spans) {
    if (s.second <= s.first) continue;
    out->Add(text.substr(s.first, s.second - s.first), in.at_start(i) && s.first == 0);
  }
}

// Each character satisfying `pred` as its own match (HF's Fn(char) pattern).
template <typename Pred>
void FindChars(absl::string_view text, Pred pred, std::vector<Span>* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    if (pred(DecodeUtf8(text, &pos))) out->emplace_back(start, pos);
  }
}

// Splits every piece at the matches `find(text, &matches)` reports.
template <typename FindFn>
void SplitEach(const Pieces& in, Pieces* out, SplitBehavior behavior, bool invert, FindFn find) {
  thread_local std::vector<Span> matches, spans;
  for (size_t i = 0; i < in.size(); ++i) {
    matches.clear();
    find(in[i], &matches);
    SplitSpans(in[i].size(), matches, behavior, invert, &spans);
    EmitSpans(in, i, spans, out);
  }
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void Apply(const Pieces& in, Pieces* out) const override {
    SplitEach(in, out, behavior_, invert_,
              [&](absl::string_view text, std::vector<Span>* m) { pattern_.FindAll(text, m); });
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
  void Apply(const Pieces& in, Pieces* out) const override {
    thread_local std::vector<Span> matches, spans;
    thread_local std::string spaced;
    for (size_t i = 0; i < in.size(); ++i) {
      absl::string_view text = in[i];
      if (add_prefix_space_ && (text.empty() || text[0] != ' ')) {
        spaced.clear();
        spaced.push_back(' ');
        spaced.append(text.data(), text.size());
        text = spaced;
      }
      if (!use_regex_) {
        out->AddWith(in.at_start(i), [&](std::string* buf) { AppendByteLevel(text, buf); });
        continue;
      }
      matches.clear();
      Gpt2Regex().FindAll(text, &matches);
      SplitSpans(text.size(), matches, SplitBehavior::kIsolated, false, &spans);
      for (const Span& s : spans) {
        if (s.second <= s.first) continue;
        out->AddWith(in.at_start(i) && s.first == 0, [&](std::string* buf) {
          AppendByteLevel(text.substr(s.first, s.second - s.first), buf);
        });
      }
    }
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
  void Apply(const Pieces& in, Pieces* out) const override {
    thread_local Pieces replaced;
    thread_local std::vector<Span> matches, spans;
    replaced.clear();
    for (size_t i = 0; i < in.size(); ++i) {
      const absl::string_view text = in[i];
      const bool at_start = in.at_start(i);
      const bool prepend =
          scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && at_start);
      Pieces& target = split_ ? replaced : *out;
      target.AddWith(at_start, [&](std::string* buf) {
        if (prepend && !absl::StartsWith(text, " ") && !absl::StartsWith(text, replacement_)) {
          buf->append(replacement_);
        }
        for (char c : text) {
          if (c == ' ') {
            buf->append(replacement_);
          } else {
            buf->push_back(c);
          }
        }
      });
    }
    if (!split_) return;
    for (size_t i = 0; i < replaced.size(); ++i) {
      matches.clear();
      FindAllLiteral(replacement_, replaced[i], &matches);
      SplitSpans(replaced[i].size(), matches, SplitBehavior::kMergedWithNext, false, &spans);
      EmitSpans(replaced, i, spans, out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void Apply(const Pieces& in, Pieces* out) const override {
    SplitEach(in, out, individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false,
              [](absl::string_view text, std::vector<Span>* m) { FindChars(text, IsNumeric, m); });
  }

 private:
  bool individual_;
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void Apply(const Pieces& in, Pieces* out) const override {
    SplitEach(
        in, out, SplitBehavior::kRemoved, false,
        [](absl::string_view text, std::vector<Span>* m) { FindChars(text, IsWhiteSpace, m); });
  }
};

// HF's Whitespace: the matches of \w+|[^\w\s]+ (Rust regex, Unicode).
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  void Apply(const Pieces& in, Pieces* out) const override {
    SplitEach(in, out, SplitBehavior::kRemoved, true,
              [](absl::string_view text, std::vector<Span>* spans) {
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
  void Apply(const Pieces& in, Pieces* out) const override {
    if (parts_.empty()) {
      for (size_t i = 0; i < in.size(); ++i) out->Add(in[i], in.at_start(i));
      return;
    }
    // Ping-pong between two buffers; the last part writes to `out`.
    thread_local std::vector<std::unique_ptr<Pieces>> buffers;
    thread_local size_t depth = 0;  // nested Sequences need their own buffers
    if (buffers.size() < 2 * (depth + 1)) {
      buffers.push_back(std::make_unique<Pieces>());
      buffers.push_back(std::make_unique<Pieces>());
    }
    Pieces* a = buffers[2 * depth].get();
    Pieces* b = buffers[2 * depth + 1].get();
    ++depth;
    const Pieces* current = &in;
    for (size_t k = 0; k < parts_.size(); ++k) {
      Pieces* target = k + 1 == parts_.size() ? out : (current == a ? b : a);
      target->clear();
      parts_[k]->Apply(*current, target);
      current = target;
    }
    a->Trim(kMaxKeptBytes);
    b->Trim(kMaxKeptBytes);
    --depth;
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

void SplitSpans(size_t text_size, const std::vector<Span>& matches, SplitBehavior behavior,
                bool invert, std::vector<Span>* result) {
  // Every part of the text, marked as match or not (HF find_matches).
  thread_local std::vector<std::pair<Span, bool>> parts;
  parts.clear();
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
  std::vector<Span>& out = *result;
  out.clear();
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
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& value,
                                                                absl::string_view path, int depth) {
  FJORD_RETURN_IF_ERROR(CheckDepth(path, depth));
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
    FJORD_ASSIGN_OR_RETURN(const bool individual, GetBool(value, path, "individual_digits", false));
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
      FJORD_ASSIGN_OR_RETURN(auto part,
                             ParsePreTokenizer((*list)[i], IndexPath(field, i), depth + 1));
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
