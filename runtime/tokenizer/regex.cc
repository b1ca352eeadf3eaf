#include "runtime/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/unicode.h"

namespace fjord::tokenizer::internal {
namespace {

// Oniguruma's \s (White_Space) and \w, as the inside of a PCRE2 class.
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

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

absl::StatusOr<std::string> TranslateOnigurumaPattern(absl::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  size_t class_start = 0;  // offset of the first char after "[" or "[^"
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) return Unsupported("trailing backslash", i);
      const char e = p[++i];
      switch (e) {
        case 's':
          absl::StrAppend(&out, in_class ? "" : "[", kSpaceSet, in_class ? "" : "]");
          continue;
        case 'w':
          absl::StrAppend(&out, in_class ? "" : "[", kWordSet, in_class ? "" : "]");
          continue;
        case 'S':
          if (in_class) break;  // PCRE2's \S (differs only at U+180E)
          absl::StrAppend(&out, "[^", kSpaceSet, "]");
          continue;
        case 'W':
          if (in_class) break;
          absl::StrAppend(&out, "[^", kWordSet, "]");
          continue;
        case 'h':
          absl::StrAppend(&out, in_class ? "" : "[", kHexSet, in_class ? "" : "]");
          continue;
        case 'H':
          if (in_class) return Unsupported("\\H inside a character class", i - 1);
          absl::StrAppend(&out, "[^", kHexSet, "]");
          continue;
        case 'u': {
          if (i + 4 >= p.size() || !IsHex(p[i + 1]) || !IsHex(p[i + 2]) || !IsHex(p[i + 3]) ||
              !IsHex(p[i + 4])) {
            return Unsupported("\\u needs four hexadecimal digits", i - 1);
          }
          absl::StrAppend(&out, "\\x{", p.substr(i + 1, 4), "}");
          i += 4;
          continue;
        }
        default:
          break;
      }
      out.push_back('\\');
      out.push_back(e);
      continue;
    }
    if (in_class) {
      if (c == ']' && i > class_start) {
        in_class = false;
      } else if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]
          const size_t end = p.find(":]", i + 2);
          if (end == absl::string_view::npos) return Unsupported("unterminated [: class", i);
          out.append(p.data() + i, end + 2 - i);
          i = end + 1;
          continue;
        }
        return Unsupported("nested character class", i);
      } else if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        return Unsupported("character class intersection (&&)", i);
      }
      out.push_back(c);
      continue;
    }
    if (c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      class_start = i + 1;  // a ']' right here is a literal
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
  if (in_class) return Unsupported("unterminated character class", class_start);
  return out;
}

absl::StatusOr<Regex> Regex::Compile(absl::string_view pattern) {
  absl::StatusOr<std::string> translated = TranslateOnigurumaPattern(pattern);
  if (!translated.ok()) return translated.status();
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated->data()),
                                   translated->size(), PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE,
                                   &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("invalid regex (", reinterpret_cast<char*>(message),
                                                   " at offset ", offset, " of \"", *translated,
                                                   "\")"));
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
    const int rc =
        code_->jit ? pcre2_jit_match(code_->code, subject, text.size(), last_end, 0, state.data,
                                     state.context)
                   : pcre2_match(code_->code, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK,
                                 state.data, state.context);
    if (rc < 0) return;  // no match, or a PCRE2 limit: no further matches
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    const size_t start = ov[0], end = ov[1];
    if (end < start || start < last_end) return;  // \K tricks: refuse to loop
    if (start == end && have_last && last_match_end == end) {
      // Oniguruma: no empty match right after the previous one; step a char.
      last_end += last_end < text.size() ? Utf8Length(static_cast<unsigned char>(text[last_end]))
                                         : 1;
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
    absl::StatusOr<std::string> literal = AsString(*s, JoinPath(path, "String"));
    if (!literal.ok()) return literal.status();
    pattern.literal_ = *std::move(literal);
    return pattern;
  }
  if (const Json* r = FindField(value, "Regex")) {
    const std::string field = JoinPath(path, "Regex");
    absl::StatusOr<std::string> text = AsString(*r, field);
    if (!text.ok()) return text.status();
    absl::StatusOr<Regex> regex = Regex::Compile(*text);
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
