#include "runtime/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/tokenizer/hf_unicode.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {
namespace {

// Oniguruma's \s (White_Space), as the inside of a PCRE2 class. \w and \d
// are PCRE2's classes below plus the Oniguruma deltas (hf_unicode.h).
constexpr char kSpaceSet[] =
    R"(\t\n\x0B\f\r\x20\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
constexpr char kWordSet[] = R"(\p{L}\p{M}\p{N}\p{Pc})";
constexpr char kHexSet[] = "0-9a-fA-F";

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

absl::Status Unsupported(absl::string_view what, size_t offset) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported regex construct at offset ", offset, ": ", what));
}

// One PCRE2 context per thread: match data (one pair: only the whole match
// is used) and a JIT stack large enough for long runs of one class.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

void AppendRanges(const CodePointRange* ranges, size_t n, std::string* out) {
  for (size_t i = 0; i < n; ++i) {
    absl::StrAppend(out, absl::StrFormat("\\x{%X}", ranges[i].first));
    if (ranges[i].last != ranges[i].first) {
      absl::StrAppend(out, absl::StrFormat("-\\x{%X}", ranges[i].last));
    }
  }
}

// A class as Oniguruma matches it, given its PCRE2 form `base` (the inside of
// a character class, e.g. "\\p{L}") and its delta (may be null): either a
// plain set (*simple: `base` plus the extra code points, usable inside a
// class) or a whole expression (negated, or code points to exclude).
std::string ClassFor(absl::string_view base, const ClassDelta* delta, bool negated, bool* simple) {
  std::string body(base), missing;
  if (delta != nullptr) {
    AppendRanges(delta->extra, delta->extra_size, &body);
    AppendRanges(delta->missing, delta->missing_size, &missing);
  }
  *simple = !negated && missing.empty();
  if (*simple) return body;
  if (!negated) return absl::StrCat("(?:(?![", missing, "])[", body, "])");
  if (missing.empty()) return absl::StrCat("[^", body, "]");
  return absl::StrCat("(?:[", missing, "]|[^", body, "])");
}

// The character class being translated: its plain members, and members that
// need a whole expression (combined with the plain ones at the end).
struct ClassState {
  bool negated = false;
  std::string body;
  std::vector<std::string> complex;
  size_t start = 0;  // offset of the first member (a "]" there is literal)

  void Add(std::string item, bool simple) {
    if (simple) {
      body += item;
    } else {
      complex.push_back(std::move(item));
    }
  }
  std::string Finish() const {
    if (complex.empty()) return absl::StrCat(negated ? "[^" : "[", body, "]");
    std::string alternatives = absl::StrJoin(complex, "|");
    if (!negated) {
      return body.empty() ? absl::StrCat("(?:", alternatives, ")")
                          : absl::StrCat("(?:[", body, "]|", alternatives, ")");
    }
    return absl::StrCat("(?:(?!", alternatives, ")", body.empty() ? "(?s:.)" : "[^" + body + "]",
                        ")");
  }
};

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

absl::StatusOr<std::string> TranslateOnigurumaPattern(absl::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  std::optional<ClassState> cls;  // set inside a character class
  // Appends a class-like item: to the current class, or as an expression.
  auto emit = [&](absl::string_view base, const ClassDelta* delta, bool negated) {
    bool simple;
    std::string item = ClassFor(base, delta, negated, &simple);
    if (cls) {
      cls->Add(std::move(item), simple);
    } else {
      absl::StrAppend(&out, simple ? absl::StrCat("[", item, "]") : item);
    }
  };
  auto literal = [&](absl::string_view text) {
    if (cls) {
      cls->body.append(text.data(), text.size());
    } else {
      out.append(text.data(), text.size());
    }
  };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) return Unsupported("trailing backslash", i);
      const char e = p[++i];
      switch (e) {
        case 's':
        case 'S':
          emit(kSpaceSet, nullptr, e == 'S');
          continue;
        case 'w':
        case 'W':
          emit(kWordSet, FindClassDelta(cls ? "w@class" : "w"), e == 'W');
          continue;
        case 'd':
        case 'D':
          emit("\\p{Nd}", FindClassDelta("d"), e == 'D');
          continue;
        case 'h':
        case 'H':
          emit(kHexSet, nullptr, e == 'H');
          continue;
        case 'p':
        case 'P': {
          // \pL, \p{L}, \p{^L}, \P{L}.
          std::string name;
          size_t end = i;
          if (i + 1 < p.size() && p[i + 1] == '{') {
            end = p.find('}', i + 2);
            if (end == absl::string_view::npos) return Unsupported("unterminated \\p{", i - 1);
            name = std::string(p.substr(i + 2, end - i - 2));
          } else if (i + 1 < p.size()) {
            end = i + 1;
            name = std::string(1, p[i + 1]);
          } else {
            return Unsupported("\\p without a property", i - 1);
          }
          bool negated = e == 'P';
          if (!name.empty() && name[0] == '^') {
            negated = !negated;
            name.erase(0, 1);
          }
          const ClassDelta* delta = FindClassDelta(name);
          if (delta == nullptr) {  // a property fjord has no delta for: PCRE2's
            literal(p.substr(i - 1, end + 2 - i));
          } else {
            emit(absl::StrCat("\\p{", name, "}"), delta, negated);
          }
          i = end;
          continue;
        }
        case 'u': {
          if (i + 4 >= p.size() || !IsHex(p[i + 1]) || !IsHex(p[i + 2]) || !IsHex(p[i + 3]) ||
              !IsHex(p[i + 4])) {
            return Unsupported("\\u needs four hexadecimal digits", i - 1);
          }
          literal(absl::StrCat("\\x{", p.substr(i + 1, 4), "}"));
          i += 4;
          continue;
        }
        default:
          literal(p.substr(i - 1, 2));
          continue;
      }
    }
    if (cls) {
      if (c == ']' && i > cls->start) {
        out += cls->Finish();
        cls.reset();
      } else if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]
          const size_t end = p.find(":]", i + 2);
          if (end == absl::string_view::npos) return Unsupported("unterminated [: class", i);
          cls->body.append(p.data() + i, end + 2 - i);
          i = end + 1;
          continue;
        }
        return Unsupported("nested character class", i);
      } else if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        return Unsupported("character class intersection (&&)", i);
      } else {
        cls->body.push_back(c);
      }
      continue;
    }
    if (c == '[') {
      cls.emplace();
      if (i + 1 < p.size() && p[i + 1] == '^') {
        cls->negated = true;
        ++i;
      }
      cls->start = i + 1;
      continue;
    }
    if (c == '(' && i + 2 < p.size() && p[i + 1] == '?') {
      // Option groups (?imx-imx) and (?imx-imx:...): Ruby's m is dotall.
      size_t j = i + 2;
      while (j < p.size() && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) ++j;
      if (j > i + 2 && j < p.size() && (p[j] == ')' || p[j] == ':')) {
        out.append("(?");
        for (size_t k = i + 2; k < j; ++k) out.push_back(p[k] == 'm' ? 's' : p[k]);
        i = j - 1;
        continue;
      }
    }
    out.push_back(c);
  }
  if (cls) return Unsupported("unterminated character class", cls->start);
  return out;
}

absl::StatusOr<Regex> Regex::Compile(absl::string_view pattern) {
  FJORD_ASSIGN_OR_RETURN(std::string translated, TranslateOnigurumaPattern(pattern));
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("invalid regex (",
                                                   reinterpret_cast<char*>(message), " at offset ",
                                                   offset, " of \"", translated, "\")"));
  }
  auto compiled = std::make_shared<Code>();
  compiled->code = code;
  compiled->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return Regex(std::string(pattern), std::move(compiled));
}

void Regex::FindAll(absl::string_view text, std::vector<Span>* out) const {
  ThreadMatchState& state = MatchState();
  if (state.data == nullptr) return;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    const int rc = code_->jit ? pcre2_jit_match(code_->code, subject, text.size(), last_end, 0,
                                                state.data, state.context)
                              : pcre2_match(code_->code, subject, text.size(), last_end,
                                            PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc < 0) return;  // no match, or a PCRE2 limit: no further matches
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    const size_t start = ov[0], end = ov[1];
    if (end < start || start < last_end) return;  // \K tricks: refuse to loop
    if (start == end && have_last && last_match_end == end) {
      // Oniguruma: no empty match right after the previous one; step a char.
      last_end +=
          last_end < text.size() ? Utf8Length(static_cast<unsigned char>(text[last_end])) : 1;
      continue;
    }
    out->emplace_back(start, end);
    last_end = end;
    have_last = true;
    last_match_end = end;
  }
}

absl::StatusOr<Pattern> Pattern::Parse(const Json& value, absl::string_view path) {
  if (!value.is_object() || value.size() != 1) {
    return FieldError(path, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  Pattern pattern;
  if (const Json* s = FindField(value, "String")) {
    FJORD_ASSIGN_OR_RETURN(std::string literal, AsString(*s, JoinPath(path, "String")));
    pattern.literal_ = std::move(literal);
    return pattern;
  }
  if (const Json* r = FindField(value, "Regex")) {
    const std::string field = JoinPath(path, "Regex");
    FJORD_ASSIGN_OR_RETURN(std::string text, AsString(*r, field));
    absl::StatusOr<Regex> regex = Regex::Compile(text);
    if (!regex.ok()) return FieldError(field, regex.status().message());
    pattern.regex_ = std::make_shared<const Regex>(*std::move(regex));
    return pattern;
  }
  return FieldError(path, "expected {\"String\": ...} or {\"Regex\": ...}");
}

Pattern Pattern::Literal(std::string literal) {
  Pattern pattern;
  pattern.literal_ = std::move(literal);
  return pattern;
}

void Pattern::FindAll(absl::string_view text, std::vector<Span>* out) const {
  if (regex_ != nullptr) {
    regex_->FindAll(text, out);
  } else {
    FindAllLiteral(literal_, text, out);
  }
}

void FindAllLiteral(absl::string_view literal, absl::string_view text, std::vector<Span>* out) {
  if (literal.empty()) return;
  size_t pos = 0;
  while ((pos = text.find(literal, pos)) != absl::string_view::npos) {
    out->emplace_back(pos, pos + literal.size());
    pos += literal.size();
  }
}

}  // namespace fjord::tokenizer::internal
