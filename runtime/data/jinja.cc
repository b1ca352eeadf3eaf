// The Jinja interpreter of jinja.h: a lexer (template text -> tokens, with
// jinja2's whitespace rules), a recursive-descent parser (tokens -> Node tree)
// and a tree-walking renderer over Value, a small model of the Python values a
// chat template sees. Strings carry origin tags (Str) for RenderWithOrigins.
#include "runtime/data/jinja.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace jinja_internal {

// ---------------------------------------------------------------------------
// Tagged strings and values.

struct Span {
  size_t begin = 0;
  size_t end = 0;
  int64_t origin = -1;
};

// A string whose byte ranges may be tagged with the message they came from.
struct Str {
  std::string text;
  std::vector<Span> spans;  // sorted, non-overlapping

  void AddSpan(size_t begin, size_t end, int64_t origin) {
    if (begin >= end || origin < 0) return;
    if (!spans.empty() && spans.back().end == begin && spans.back().origin == origin) {
      spans.back().end = end;
      return;
    }
    spans.push_back(Span{begin, end, origin});
  }
  void Append(const Str& other) {
    const size_t base = text.size();
    text += other.text;
    for (const Span& span : other.spans) AddSpan(base + span.begin, base + span.end, span.origin);
  }
  void Append(absl::string_view plain) { text.append(plain.data(), plain.size()); }
  // Bytes [begin, end), with their tags.
  Str Sub(size_t begin, size_t end) const {
    Str out;
    end = std::min(end, text.size());
    if (begin >= end) return out;
    out.text = text.substr(begin, end - begin);
    for (const Span& span : spans) {
      const size_t lo = std::max(span.begin, begin);
      const size_t hi = std::min(span.end, end);
      if (lo < hi) out.AddSpan(lo - begin, hi - begin, span.origin);
    }
    return out;
  }
  // The single origin of every tagged byte, or -1 when there are none or
  // several.
  int64_t SoleOrigin() const {
    if (spans.empty()) return -1;
    for (const Span& span : spans) {
      if (span.origin != spans.front().origin) return -1;
    }
    return spans.front().origin;
  }
};

Str Tagged(std::string text, int64_t origin) {
  Str s;
  s.text = std::move(text);
  s.AddSpan(0, s.text.size(), origin);
  return s;
}

struct Node;
struct Value;
using List = std::vector<Value>;
struct Dict;

struct Value {
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kMacro,
    kBuiltin
  };
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  // kString: the string; kUndefined: the message an error about it gives;
  // kBuiltin: the function's name.
  std::shared_ptr<const Str> s;
  std::shared_ptr<const List> list;  // kList (tuples too)
  std::shared_ptr<Dict> dict;        // kDict (never mutated), kNamespace (mutable)
  const Node* macro = nullptr;       // kMacro
  int64_t origin = -1;               // the message a value from the context came from
  bool tuple = false;                // kList: a Python tuple (prints with parentheses)

  static Value Undefined(std::string why) {
    Value v;
    v.s = std::make_shared<Str>(Str{std::move(why), {}});
    return v;
  }
  static Value None() {
    Value v;
    v.kind = Kind::kNone;
    return v;
  }
  static Value Bool(bool b) {
    Value v;
    v.kind = Kind::kBool;
    v.b = b;
    return v;
  }
  static Value Int(int64_t i) {
    Value v;
    v.kind = Kind::kInt;
    v.i = i;
    return v;
  }
  static Value Float(double f) {
    Value v;
    v.kind = Kind::kFloat;
    v.f = f;
    return v;
  }
  static Value String(Str s) {
    Value v;
    v.kind = Kind::kString;
    v.s = std::make_shared<const Str>(std::move(s));
    return v;
  }
  static Value Plain(std::string s) { return String(Str{std::move(s), {}}); }
  static Value MakeList(List items) {
    Value v;
    v.kind = Kind::kList;
    v.list = std::make_shared<const List>(std::move(items));
    return v;
  }
  static Value MakeTuple(List items) {
    Value v = MakeList(std::move(items));
    v.tuple = true;
    return v;
  }
  static Value MakeDict(std::shared_ptr<Dict> d, Kind kind = Kind::kDict) {
    Value v;
    v.kind = kind;
    v.dict = std::move(d);
    return v;
  }

  bool undefined() const { return kind == Kind::kUndefined; }
  bool is_number() const {
    return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool;
  }
  bool is_integer() const { return kind == Kind::kInt || kind == Kind::kBool; }
  int64_t AsInt() const { return kind == Kind::kBool ? (b ? 1 : 0) : i; }
  double AsFloat() const { return kind == Kind::kFloat ? f : static_cast<double>(AsInt()); }
  const std::string& text() const { return s->text; }
};

// An insertion-ordered dict with string keys (Python dicts keep order).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;

  const Value* Find(absl::string_view key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  void Set(absl::string_view key, Value value) {
    for (auto& [k, v] : items) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    items.emplace_back(std::string(key), std::move(value));
  }
};

const char* TypeName(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kList:
      return "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kMacro:
      return "Macro";
    case Value::Kind::kBuiltin:
      return "builtin_function_or_method";
  }
  return "?";
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.b;
    case Value::Kind::kInt:
      return v.i != 0;
    case Value::Kind::kFloat:
      return v.f != 0;
    case Value::Kind::kString:
      return !v.text().empty();
    case Value::Kind::kList:
      return !v.list->empty();
    case Value::Kind::kDict:
      return !v.dict->items.empty();
    default:
      return true;
  }
}

// ---------------------------------------------------------------------------
// UTF-8 and Python-compatible text helpers.

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Byte offsets of each code point's start, plus text.size() at the end.
std::vector<size_t> CodePointOffsets(absl::string_view text) {
  std::vector<size_t> offsets;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!IsContinuation(text[i]) || i == 0) offsets.push_back(i);
  }
  offsets.push_back(text.size());
  return offsets;
}

size_t CodePointCount(absl::string_view text) { return CodePointOffsets(text).size() - 1; }

// Decodes the code point at `pos` (invalid bytes decode as themselves).
uint32_t DecodeAt(absl::string_view text, size_t pos, size_t* len) {
  const auto c = static_cast<unsigned char>(text[pos]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (pos + n > text.size()) n = 1;
  for (int k = 1; k < n; ++k) {
    if (!IsContinuation(text[pos + k])) n = 1;
  }
  *len = n;
  if (n == 1) return c;
  uint32_t cp = c & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
  return cp;
}

void EncodeUtf8(uint32_t cp, std::string* out) {
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

// Python's str.isspace() for one code point.
bool IsPySpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Python's str.strip/lstrip/rstrip: `chars` null strips whitespace.
Str StripStr(const Str& s, const std::string* chars, bool left, bool right) {
  std::set<uint32_t> set;
  if (chars != nullptr) {
    for (size_t i = 0, n = 0; i < chars->size(); i += n) set.insert(DecodeAt(*chars, i, &n));
  }
  auto strip = [&](uint32_t cp) { return chars == nullptr ? IsPySpace(cp) : set.count(cp) > 0; };
  const std::string& t = s.text;
  size_t begin = 0, end = t.size();
  if (left) {
    while (begin < end) {
      size_t n = 0;
      if (!strip(DecodeAt(t, begin, &n))) break;
      begin += n;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && IsContinuation(t[start])) --start;
      size_t n = 0;
      if (!strip(DecodeAt(t, start, &n)) || start + n != end) break;
      end = start;
    }
  }
  return s.Sub(begin, end);
}

std::string AsciiUpper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}
std::string AsciiLower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}
bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Python's repr(float).
std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string sci(buf, result.ptr);  // "-d.ddde+XX"
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::stoi(sci.substr(e + 1));
  std::string sign;
  if (!mantissa.empty() && mantissa[0] == '-') {
    sign = "-";
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  if (exponent >= -4 && exponent < 16) {
    std::string out;
    if (exponent < 0) {
      out = "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return sign + out;
  }
  std::string out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp[16];
  std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + out + exp;
}

// Python's repr(str).
std::string StringRepr(absl::string_view s) {
  const bool has_single = s.find('\'') != absl::string_view::npos;
  const bool has_double = s.find('"') != absl::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0, n = 0; i < s.size(); i += n) {
    const uint32_t cp = DecodeAt(s, i, &n);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", cp);
      out += buf;
    } else {
      out.append(s.data() + i, n);
    }
  }
  out.push_back(quote);
  return out;
}

std::string Repr(const Value& v);

// Python's str(v) as a tagged string.
Str ToStr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kString:
      return *v.s;
    case Value::Kind::kUndefined:
      return Str();
    default:
      return Tagged(Repr(v), v.origin);
  }
}

std::string Repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.b ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.i);
    case Value::Kind::kFloat:
      return FloatRepr(v.f);
    case Value::Kind::kString:
      return StringRepr(v.text());
    case Value::Kind::kList: {
      std::string out = v.tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k > 0) out += ", ";
        out += Repr((*v.list)[k]);
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Value::Kind::kDict:
    case Value::Kind::kNamespace: {
      std::string out = v.kind == Value::Kind::kDict ? "{" : "<Namespace {";
      bool first = true;
      for (const auto& [k, item] : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += StringRepr(k) + ": " + Repr(item);
      }
      return out + (v.kind == Value::Kind::kDict ? "}" : "}>");
    }
    case Value::Kind::kMacro:
      return "<Macro>";
    case Value::Kind::kBuiltin:
      return "<built-in function " + v.text() + ">";
  }
  return "";
}

void JsonString(absl::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (size_t i = 0, n = 0; i < s.size(); i += n) {
    const uint32_t cp = DecodeAt(s, i, &n);
    switch (cp) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    char buf[16];
    if (cp < 0x20 || (ensure_ascii && cp >= 0x7F)) {
      if (cp >= 0x10000) {
        const uint32_t c = cp - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      }
      *out += buf;
    } else {
      out->append(s.data() + i, n);
    }
  }
  out->push_back('"');
}

struct JsonStyle {
  int64_t indent = -1;  // -1: none (one line)
  bool sort_keys = false;
  bool ensure_ascii = false;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
};

// Python's json.dumps(v, ...) into out. InvalidArgument for values JSON cannot
// hold.
absl::Status JsonDump(const Value& v, const JsonStyle& style, int level, int64_t max_bytes,
                      std::string* out) {
  if (static_cast<int64_t>(out->size()) > max_bytes) {
    return absl::ResourceExhaustedError("tojson output is larger than the output budget");
  }
  if (level > 1000) return absl::InvalidArgumentError("tojson: value nested too deeply");
  auto newline = [&](int l) {
    if (style.indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(style.indent * l), ' ');
  };
  switch (v.kind) {
    case Value::Kind::kNone:
      *out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      *out += v.b ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      *out += std::to_string(v.i);
      return absl::OkStatus();
    case Value::Kind::kFloat:
      if (std::isnan(v.f)) {
        *out += "NaN";
      } else if (std::isinf(v.f)) {
        *out += v.f < 0 ? "-Infinity" : "Infinity";
      } else {
        *out += FloatRepr(v.f);
      }
      return absl::OkStatus();
    case Value::Kind::kString:
      JsonString(v.text(), style.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList: {
      if (v.list->empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k > 0) *out += style.item_sep;
        newline(level + 1);
        FJORD_RETURN_IF_ERROR(JsonDump((*v.list)[k], style, level + 1, max_bytes, out));
      }
      newline(level);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      if (v.dict->items.empty()) {
        *out += "{}";
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.dict->items) items.push_back(&item);
      if (style.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      for (size_t k = 0; k < items.size(); ++k) {
        if (k > 0) *out += style.item_sep;
        newline(level + 1);
        JsonString(items[k]->first, style.ensure_ascii, out);
        *out += style.key_sep;
        FJORD_RETURN_IF_ERROR(JsonDump(items[k]->second, style, level + 1, max_bytes, out));
      }
      newline(level);
      out->push_back('}');
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: Object of type ", TypeName(v), " is not JSON serializable"));
  }
}

bool Equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integer() && b.is_integer()) return a.AsInt() == b.AsInt();
    return a.AsFloat() == b.AsFloat();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.text() == b.text();
    case Value::Kind::kList: {
      if (a.tuple != b.tuple || a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!Equals((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* other = b.dict->Find(k);
        if (other == nullptr || !Equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kNamespace:
      return a.dict == b.dict;
    case Value::Kind::kMacro:
      return a.macro == b.macro;
    case Value::Kind::kBuiltin:
      return a.text() == b.text();
    default:
      return false;
  }
}

// <0, 0, >0 as Python orders a and b; InvalidArgument where Python raises.
absl::StatusOr<int> Compare(const Value& a, const Value& b, absl::string_view op) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integer() && b.is_integer()) {
      return a.AsInt() < b.AsInt() ? -1 : a.AsInt() > b.AsInt() ? 1 : 0;
    }
    const double x = a.AsFloat(), y = b.AsFloat();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.kind == Value::Kind::kString && b.kind == Value::Kind::kString) {
    const int c = a.text().compare(b.text());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.kind == Value::Kind::kList && b.kind == Value::Kind::kList && a.tuple == b.tuple) {
    const size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (Equals((*a.list)[k], (*b.list)[k])) continue;
      return Compare((*a.list)[k], (*b.list)[k], op);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  if (a.undefined() || b.undefined()) {
    return absl::InvalidArgumentError(a.undefined() ? a.text() : b.text());
  }
  return absl::InvalidArgumentError(absl::StrCat("'", op, "' not supported between instances of '",
                                                 TypeName(a), "' and '", TypeName(b), "'"));
}

// ---------------------------------------------------------------------------
// Lexer.

enum class Tok {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type = Tok::kEof;
  std::string text;  // kText, kName, kString (unescaped), kOp
  int64_t ival = 0;
  double fval = 0;
  size_t pos = 0;  // byte offset in the (normalised) source
};

class SourceMap {
 public:
  explicit SourceMap(absl::string_view source) {
    starts_.push_back(0);
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\n') starts_.push_back(i + 1);
    }
  }
  int Line(size_t pos) const {
    return static_cast<int>(std::upper_bound(starts_.begin(), starts_.end(), pos) -
                            starts_.begin());
  }
  int Column(size_t pos) const { return static_cast<int>(pos - starts_[Line(pos) - 1]) + 1; }

 private:
  std::vector<size_t> starts_;
};

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) { return IsAsciiAlpha(c) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  Lexer(absl::string_view source, const SourceMap& map) : src_(source), map_(map) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    while (pos <= src_.size()) {
      size_t tag = pos;
      while (true) {
        tag = src_.find('{', tag);
        if (tag == absl::string_view::npos || tag + 1 >= src_.size()) {
          tag = absl::string_view::npos;
          break;
        }
        const char c = src_[tag + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++tag;
      }
      const size_t text_end = tag == absl::string_view::npos ? src_.size() : tag;
      std::string text(src_.substr(pos, text_end - pos));
      if (tag == absl::string_view::npos) {
        Emit(Tok::kText, std::move(text), pos);
        break;
      }
      const char kind = src_[tag + 1];
      const char modifier = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (modifier == '-') {
        size_t keep = text.size();
        while (keep > 0 && IsSpace(text[keep - 1])) --keep;
        text.resize(keep);
      } else if (kind != '{' && modifier != '+') {
        // lstrip_blocks: drop spaces and tabs between the line start and a
        // block or comment tag.
        const size_t nl = text.rfind('\n');
        const size_t line_start = nl == std::string::npos ? 0 : nl + 1;
        const bool line_starting = pos == 0 || src_[pos - 1] == '\n';
        if (nl != std::string::npos || line_starting) {
          bool blank = true;
          for (size_t i = line_start; i < text.size(); ++i) {
            if (text[i] != ' ' && text[i] != '\t') blank = false;
          }
          if (blank) text.resize(line_start);
        }
      }
      Emit(Tok::kText, std::move(text), pos);
      size_t inner = tag + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      size_t end_pos = 0;   // first byte after the closing delimiter
      char end_mod = '\0';  // '-' or '+' before the closing delimiter
      if (kind == '#') {
        const size_t close = src_.find("#}", tag + 2);
        if (close == absl::string_view::npos) return Error(tag, "unterminated comment");
        if (close > tag + 2 && (src_[close - 1] == '-' || src_[close - 1] == '+')) {
          end_mod = src_[close - 1];
        }
        end_pos = close + 2;
      } else {
        tokens_.push_back(Token{kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", 0, 0, tag});
        FJORD_ASSIGN_OR_RETURN(end_pos, LexTag(inner, kind == '{', tag, &end_mod));
      }
      pos = end_pos;
      if (end_mod == '-') {
        while (pos < src_.size() && IsSpace(src_[pos])) ++pos;
      } else if (kind != '{' && end_mod != '+' && pos < src_.size() && src_[pos] == '\n') {
        ++pos;  // trim_blocks
      }
    }
    tokens_.push_back(Token{Tok::kEof, "", 0, 0, src_.size()});
    return std::move(tokens_);
  }

 private:
  void Emit(Tok type, std::string text, size_t pos) {
    if (type == Tok::kText && text.empty()) return;
    tokens_.push_back(Token{type, std::move(text), 0, 0, pos});
  }

  absl::Status Error(size_t pos, absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", map_.Line(pos), ", column ", map_.Column(pos), ": ", message));
  }

  // Tokens of one {{ }} or {% %} from `pos`; returns the offset after the
  // closing delimiter.
  absl::StatusOr<size_t> LexTag(size_t pos, bool variable, size_t tag, char* end_mod) {
    int depth = 0;
    while (true) {
      while (pos < src_.size() && IsSpace(src_[pos])) ++pos;
      if (pos >= src_.size()) {
        return Error(tag, variable ? "unexpected end of template, the '{{' is never closed"
                                   : "unexpected end of template, the '{%' is never closed");
      }
      const absl::string_view rest = src_.substr(pos);
      if (depth == 0) {
        const absl::string_view close = variable ? "}}" : "%}";
        for (char mod : {'-', '+'}) {
          if (rest.size() >= 3 && rest[0] == mod && rest.substr(1, 2) == close &&
              (mod == '-' || !variable)) {
            *end_mod = mod;
            tokens_.push_back(Token{variable ? Tok::kVarEnd : Tok::kBlockEnd, "", 0, 0, pos});
            return pos + 3;
          }
        }
        if (absl::StartsWith(rest, close)) {
          tokens_.push_back(Token{variable ? Tok::kVarEnd : Tok::kBlockEnd, "", 0, 0, pos});
          return pos + 2;
        }
      }
      const char c = rest[0];
      if (IsNameStart(c)) {
        size_t n = 1;
        while (n < rest.size() && (IsNameStart(rest[n]) || IsDigit(rest[n]))) ++n;
        tokens_.push_back(Token{Tok::kName, std::string(rest.substr(0, n)), 0, 0, pos});
        pos += n;
      } else if (IsDigit(c)) {
        FJORD_ASSIGN_OR_RETURN(pos, LexNumber(pos));
      } else if (c == '\'' || c == '"') {
        FJORD_ASSIGN_OR_RETURN(pos, LexString(pos));
      } else {
        static constexpr absl::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (absl::string_view two : kTwo) {
          if (absl::StartsWith(rest, two)) op = std::string(two);
        }
        if (op.empty()) {
          if (std::strchr("+-*/%~<>=()[]{},.:|", c) == nullptr || c == '\0') {
            return Error(pos, absl::StrCat("unexpected character ", StringRepr(rest.substr(0, 1))));
          }
          op = std::string(1, c);
          if (c == '(' || c == '[' || c == '{') ++depth;
          if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        }
        tokens_.push_back(Token{Tok::kOp, op, 0, 0, pos});
        pos += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexNumber(size_t pos) {
    size_t i = pos;
    auto digits = [&]() {
      while (i < src_.size() && (IsDigit(src_[i]) ||
                                 (src_[i] == '_' && i + 1 < src_.size() && IsDigit(src_[i + 1])))) {
        ++i;
      }
    };
    digits();
    bool is_float = false;
    if (i + 1 < src_.size() && src_[i] == '.' && IsDigit(src_[i + 1])) {
      is_float = true;
      ++i;
      digits();
    }
    if (i < src_.size() && (src_[i] == 'e' || src_[i] == 'E')) {
      size_t j = i + 1;
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) ++j;
      if (j < src_.size() && IsDigit(src_[j])) {
        is_float = true;
        i = j;
        digits();
      }
    }
    std::string text;
    for (size_t k = pos; k < i; ++k) {
      if (src_[k] != '_') text.push_back(src_[k]);
    }
    Token token{is_float ? Tok::kFloat : Tok::kInt, text, 0, 0, pos};
    if (is_float) {
      token.fval = std::strtod(text.c_str(), nullptr);
    } else {
      auto result = std::from_chars(text.data(), text.data() + text.size(), token.ival);
      if (result.ec != std::errc()) return Error(pos, "integer literal too large");
    }
    tokens_.push_back(std::move(token));
    return i;
  }

  // A quoted string with Python's escapes (jinja2 decodes them as
  // "unicode-escape").
  absl::StatusOr<size_t> LexString(size_t pos) {
    const char quote = src_[pos];
    std::string out;
    size_t i = pos + 1;
    while (true) {
      if (i >= src_.size()) return Error(pos, "unterminated string");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) return Error(pos, "unterminated string");
      const char e = src_[i + 1];
      i += 2;
      auto hex = [&](int n) -> absl::StatusOr<uint32_t> {
        if (i + n > src_.size()) return Error(i - 2, "truncated \\x, \\u or \\U escape");
        uint32_t cp = 0;
        for (int k = 0; k < n; ++k) {
          const char h = src_[i + k];
          int d = IsDigit(h)               ? h - '0'
                  : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                  : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                           : -1;
          if (d < 0) return Error(i - 2, "truncated \\x, \\u or \\U escape");
          cp = cp * 16 + static_cast<uint32_t>(d);
        }
        i += n;
        return cp;
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
        case '\'':
        case '"':
          out.push_back(e);
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          FJORD_ASSIGN_OR_RETURN(uint32_t cp, hex(e == 'x' ? 2 : e == 'u' ? 4 : 8));
          if (cp > 0x10FFFF) return Error(i, "escape beyond U+10FFFF");
          EncodeUtf8(cp, &out);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
              cp = cp * 8 + static_cast<uint32_t>(src_[i++] - '0');
            }
            EncodeUtf8(cp, &out);
          } else {
            out.push_back('\\');
            --i;  // the character after the backslash is read again as itself
          }
      }
    }
    tokens_.push_back(Token{Tok::kString, std::move(out), 0, 0, pos});
    return i + 1;
  }

  absl::string_view src_;
  const SourceMap& map_;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------
// Syntax tree.

enum class NodeKind {
  // Expressions.
  kLiteral,
  kName,
  kListLit,
  kDictLit,
  kAttr,
  kSubscript,
  kSlice,
  kCall,
  kFilter,
  kTest,
  kNeg,
  kPos,
  kBinary,
  kAnd,
  kOr,
  kNot,
  kCompare,
  kCond,
  // Statements.
  kText,
  kOutput,
  kIf,
  kFor,
  kSet,
  kMacro,
  kBreak,
  kContinue,
  kBlock,
};

using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  NodeKind kind;
  int line = 0;
  int depth = 1;                   // height of the tree below, for the nesting budget
  std::string name;                // name, attribute, filter/test/macro, set target, text
  std::string attr;                // kSet: `ns.attr` target's attribute
  std::vector<std::string> names;  // kCall/kFilter/kTest: kwarg name per arg ("" positional);
                                   // kCompare: operators; kFor: targets; kMacro: params
  NodeList kids;                   // operands (may hold nullptr: absent slice parts)
  std::vector<NodeList> bodies;    // kIf: one per branch; kFor: body, else; kSet/kMacro: body
  Value literal;
  bool negated = false;  // kTest: `is not`
  bool block = false;    // kSet: the {% set x %}...{% endset %} form
};

int DepthOf(const NodeList& list) {
  int depth = 0;
  for (const NodePtr& node : list) {
    if (node != nullptr) depth = std::max(depth, node->depth);
  }
  return depth;
}

const std::set<std::string>& KnownFilters() {
  static const auto* filters = new std::set<std::string>{
      "abs",     "capitalize", "count", "d",      "default",    "dictsort", "e",
      "escape",  "first",      "float", "indent", "int",        "items",    "join",
      "last",    "length",     "list",  "lower",  "map",        "reject",   "rejectattr",
      "replace", "reverse",    "safe",  "select", "selectattr", "sort",     "string",
      "title",   "tojson",     "trim",  "unique", "upper"};
  return *filters;
}

const std::set<std::string>& KnownTests() {
  static const auto* tests = new std::set<std::string>{
      "boolean", "callable", "defined",   "divisibleby", "eq",          "equalto",
      "even",    "false",    "float",     "ge",          "gt",          "in",
      "integer", "iterable", "le",        "lower",       "lt",          "mapping",
      "ne",      "none",     "number",    "odd",         "sameas",      "sequence",
      "string",  "true",     "undefined", "upper",       "==",          "!=",
      "<",       "<=",       ">",         ">=",          "greaterthan", "lessthan"};
  return *tests;
}

// ---------------------------------------------------------------------------
// Parser.

class Parser {
 public:
  Parser(std::vector<Token> tokens, const SourceMap& map, int max_depth)
      : toks_(std::move(tokens)), map_(map), max_depth_(max_depth) {}

  absl::StatusOr<NodePtr> ParseTemplate() {
    auto root = std::make_unique<Node>();
    root->kind = NodeKind::kBlock;
    root->line = 1;
    std::string end;
    root->bodies.emplace_back();
    FJORD_ASSIGN_OR_RETURN(root->bodies[0], ParseBody({}, &end));
    return root;
  }

 private:
  // Nesting guard for the recursive descent.
  class Guard {
   public:
    explicit Guard(Parser* p) : p_(p) { ++p_->depth_; }
    ~Guard() { --p_->depth_; }

   private:
    Parser* p_;
  };

  const Token& Cur() const { return toks_[p_]; }
  const Token& Peek(size_t k = 1) const { return toks_[std::min(p_ + k, toks_.size() - 1)]; }
  void Next() {
    if (p_ + 1 < toks_.size()) ++p_;
  }
  bool IsOp(absl::string_view op) const { return Cur().type == Tok::kOp && Cur().text == op; }
  bool IsName(absl::string_view name) const {
    return Cur().type == Tok::kName && Cur().text == name;
  }
  absl::Status Error(const Token& at, absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", map_.Line(at.pos), ", column ", map_.Column(at.pos), ": ", message));
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Tok::kText:
        return "template text";
      case Tok::kVarBegin:
        return "'{{'";
      case Tok::kVarEnd:
        return "'}}'";
      case Tok::kBlockBegin:
        return "'{%'";
      case Tok::kBlockEnd:
        return "'%}'";
      case Tok::kName:
        return "'" + t.text + "'";
      case Tok::kString:
        return "a string";
      case Tok::kInt:
      case Tok::kFloat:
        return "a number";
      case Tok::kOp:
        return "'" + t.text + "'";
      case Tok::kEof:
        return "the end of the template";
    }
    return "?";
  }
  absl::Status Expect(absl::string_view op) {
    if (!IsOp(op)) {
      return Error(Cur(), absl::StrCat("expected '", op, "', got ", Describe(Cur())));
    }
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().type != Tok::kBlockEnd) {
      return Error(Cur(), absl::StrCat("expected '%}', got ", Describe(Cur())));
    }
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().type != Tok::kName) {
      return Error(Cur(), absl::StrCat("expected a name, got ", Describe(Cur())));
    }
    std::string name = Cur().text;
    Next();
    return name;
  }

  NodePtr Make(NodeKind kind, const Token& at) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->line = map_.Line(at.pos);
    return node;
  }
  // Sets node->depth from its children; errors when too deep.
  absl::StatusOr<NodePtr> Seal(NodePtr node, const Token& at) {
    int depth = DepthOf(node->kids);
    for (const NodeList& body : node->bodies) depth = std::max(depth, DepthOf(body));
    node->depth = depth + 1;
    if (node->depth > 4 * max_depth_) {
      return Error(at, absl::StrCat("expression or block nested deeper than ", 4 * max_depth_));
    }
    return node;
  }

  // Statements until a {% NAME %} with NAME in `ends` (consumed up to the
  // name; *end says which) or, with no ends, the end of the template.
  absl::StatusOr<NodeList> ParseBody(std::initializer_list<absl::string_view> ends,
                                     std::string* end) {
    Guard guard(this);
    if (depth_ > max_depth_) {
      return Error(Cur(), absl::StrCat("blocks nested deeper than ", max_depth_));
    }
    NodeList body;
    while (true) {
      const Token& t = Cur();
      if (t.type == Tok::kEof) {
        if (ends.size() == 0) return body;
        return Error(t, absl::StrCat("unexpected end of template; expected '{% ", *(ends.end() - 1),
                                     " %}'"));
      }
      if (t.type == Tok::kText) {
        NodePtr node = Make(NodeKind::kText, t);
        node->name = t.text;
        body.push_back(std::move(node));
        Next();
        continue;
      }
      if (t.type == Tok::kVarBegin) {
        NodePtr node = Make(NodeKind::kOutput, t);
        Next();
        FJORD_ASSIGN_OR_RETURN(NodePtr expr, ParseTuple());
        node->kids.push_back(std::move(expr));
        if (Cur().type != Tok::kVarEnd) {
          return Error(Cur(), absl::StrCat("expected '}}', got ", Describe(Cur())));
        }
        Next();
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(node), t));
        body.push_back(std::move(node));
        continue;
      }
      if (t.type != Tok::kBlockBegin) return Error(t, "unexpected " + Describe(t));
      const Token& name = Peek();
      if (name.type != Tok::kName) {
        return Error(name, absl::StrCat("expected a tag name, got ", Describe(name)));
      }
      for (absl::string_view e : ends) {
        if (name.text == e) {
          Next();
          Next();
          *end = name.text;
          return body;
        }
      }
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr stmt, ParseStatement());
      body.push_back(std::move(stmt));
    }
  }

  absl::StatusOr<NodePtr> ParseStatement() {
    const Token at = Cur();
    const std::string tag = at.text;
    Next();
    if (tag == "if") return ParseIf(at);
    if (tag == "for") return ParseFor(at);
    if (tag == "set") return ParseSet(at);
    if (tag == "macro") return ParseMacro(at);
    if (tag == "break" || tag == "continue") {
      if (loops_ == 0) return Error(at, absl::StrCat("'", tag, "' outside of a loop"));
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      return Make(tag == "break" ? NodeKind::kBreak : NodeKind::kContinue, at);
    }
    if (tag == "generation") {
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      NodePtr node = Make(NodeKind::kBlock, at);
      node->name = "generation";
      has_generation_ = true;
      std::string end;
      node->bodies.emplace_back();
      FJORD_ASSIGN_OR_RETURN(node->bodies[0], ParseBody({"endgeneration"}, &end));
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      return Seal(std::move(node), at);
    }
    static const std::set<std::string> kUnsupported = {"include", "import",     "from", "extends",
                                                       "block",   "raw",        "call", "filter",
                                                       "with",    "autoescape", "do"};
    if (kUnsupported.count(tag) > 0) {
      return Error(at, absl::StrCat("the '", tag, "' tag is not supported by fjord's Jinja"));
    }
    return Error(at, absl::StrCat("unknown tag '", tag, "'"));
  }

  absl::StatusOr<NodePtr> ParseIf(const Token& at) {
    NodePtr node = Make(NodeKind::kIf, at);
    std::string end = "if";
    while (end == "if" || end == "elif") {
      FJORD_ASSIGN_OR_RETURN(NodePtr cond, ParseExpression());
      node->kids.push_back(std::move(cond));
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      node->bodies.emplace_back();
      FJORD_ASSIGN_OR_RETURN(node->bodies.back(), ParseBody({"elif", "else", "endif"}, &end));
    }
    if (end == "else") {
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      node->bodies.emplace_back();
      FJORD_ASSIGN_OR_RETURN(node->bodies.back(), ParseBody({"endif"}, &end));
    }
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    return Seal(std::move(node), at);
  }

  absl::StatusOr<NodePtr> ParseFor(const Token& at) {
    NodePtr node = Make(NodeKind::kFor, at);
    const bool paren = IsOp("(");
    if (paren) Next();
    while (true) {
      FJORD_ASSIGN_OR_RETURN(std::string target, ExpectName());
      node->names.push_back(target);
      if (!IsOp(",")) break;
      Next();
    }
    if (paren) FJORD_RETURN_IF_ERROR(Expect(")"));
    if (!IsName("in")) return Error(Cur(), "expected 'in' in the for loop");
    Next();
    FJORD_ASSIGN_OR_RETURN(NodePtr iter, ParseOr());
    node->kids.push_back(std::move(iter));
    if (IsName("if")) {
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr cond, ParseExpression());
      node->kids.push_back(std::move(cond));
    } else {
      node->kids.push_back(nullptr);
    }
    if (IsName("recursive")) return Error(Cur(), "recursive loops are not supported");
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    ++loops_;
    std::string end;
    node->bodies.emplace_back();
    absl::StatusOr<NodeList> body = ParseBody({"else", "endfor"}, &end);
    --loops_;
    if (!body.ok()) return body.status();
    node->bodies[0] = std::move(*body);
    node->bodies.emplace_back();
    if (end == "else") {
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      FJORD_ASSIGN_OR_RETURN(node->bodies[1], ParseBody({"endfor"}, &end));
    }
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    return Seal(std::move(node), at);
  }

  absl::StatusOr<NodePtr> ParseSet(const Token& at) {
    NodePtr node = Make(NodeKind::kSet, at);
    FJORD_ASSIGN_OR_RETURN(node->name, ExpectName());
    if (IsOp(".")) {
      Next();
      FJORD_ASSIGN_OR_RETURN(node->attr, ExpectName());
    }
    if (IsOp(",")) return Error(Cur(), "set with several targets is not supported");
    if (IsOp("=")) {
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr value, ParseTuple());
      node->kids.push_back(std::move(value));
      FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
      return Seal(std::move(node), at);
    }
    if (!node->attr.empty()) return Error(Cur(), "expected '=' after the set target");
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    node->block = true;
    std::string end;
    node->bodies.emplace_back();
    FJORD_ASSIGN_OR_RETURN(node->bodies[0], ParseBody({"endset"}, &end));
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    return Seal(std::move(node), at);
  }

  absl::StatusOr<NodePtr> ParseMacro(const Token& at) {
    NodePtr node = Make(NodeKind::kMacro, at);
    FJORD_ASSIGN_OR_RETURN(node->name, ExpectName());
    FJORD_RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      FJORD_ASSIGN_OR_RETURN(std::string param, ExpectName());
      node->names.push_back(param);
      if (IsOp("=")) {
        Next();
        FJORD_ASSIGN_OR_RETURN(NodePtr def, ParseExpression());
        node->kids.push_back(std::move(def));
      } else {
        node->kids.push_back(nullptr);
      }
      if (!IsOp(",")) break;
      Next();
    }
    FJORD_RETURN_IF_ERROR(Expect(")"));
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    const int saved_loops = loops_;
    loops_ = 0;
    std::string end;
    node->bodies.emplace_back();
    absl::StatusOr<NodeList> body = ParseBody({"endmacro"}, &end);
    loops_ = saved_loops;
    if (!body.ok()) return body.status();
    node->bodies[0] = std::move(*body);
    FJORD_RETURN_IF_ERROR(ExpectBlockEnd());
    return Seal(std::move(node), at);
  }

  // expr (',' expr)* -> a tuple (list) when there is a comma.
  absl::StatusOr<NodePtr> ParseTuple() {
    const Token at = Cur();
    FJORD_ASSIGN_OR_RETURN(NodePtr first, ParseExpression());
    if (!IsOp(",")) return first;
    NodePtr list = Make(NodeKind::kListLit, at);
    list->literal.tuple = true;
    list->kids.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Cur().type == Tok::kVarEnd || Cur().type == Tok::kBlockEnd || IsOp(")")) break;
      FJORD_ASSIGN_OR_RETURN(NodePtr item, ParseExpression());
      list->kids.push_back(std::move(item));
    }
    return Seal(std::move(list), at);
  }

  absl::StatusOr<NodePtr> ParseExpression() {
    Guard guard(this);
    if (depth_ > max_depth_) {
      return Error(Cur(), absl::StrCat("expression nested deeper than ", max_depth_));
    }
    const Token at = Cur();
    FJORD_ASSIGN_OR_RETURN(NodePtr expr, ParseOr());
    while (IsName("if")) {
      Next();
      NodePtr cond = Make(NodeKind::kCond, at);
      FJORD_ASSIGN_OR_RETURN(NodePtr test, ParseOr());
      NodePtr otherwise;
      if (IsName("else")) {
        Next();
        FJORD_ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      cond->kids.push_back(std::move(expr));
      cond->kids.push_back(std::move(test));
      cond->kids.push_back(std::move(otherwise));
      FJORD_ASSIGN_OR_RETURN(expr, Seal(std::move(cond), at));
    }
    return expr;
  }

  absl::StatusOr<NodePtr> ParseOr() {
    const Token at = Cur();
    FJORD_ASSIGN_OR_RETURN(NodePtr left, ParseAnd());
    while (IsName("or")) {
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr right, ParseAnd());
      NodePtr node = Make(NodeKind::kOr, at);
      node->kids.push_back(std::move(left));
      node->kids.push_back(std::move(right));
      FJORD_ASSIGN_OR_RETURN(left, Seal(std::move(node), at));
    }
    return left;
  }

  absl::StatusOr<NodePtr> ParseAnd() {
    const Token at = Cur();
    FJORD_ASSIGN_OR_RETURN(NodePtr left, ParseNot());
    while (IsName("and")) {
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr right, ParseNot());
      NodePtr node = Make(NodeKind::kAnd, at);
      node->kids.push_back(std::move(left));
      node->kids.push_back(std::move(right));
      FJORD_ASSIGN_OR_RETURN(left, Seal(std::move(node), at));
    }
    return left;
  }

  absl::StatusOr<NodePtr> ParseNot() {
    Guard guard(this);
    if (depth_ > max_depth_) {
      return Error(Cur(), absl::StrCat("expression nested deeper than ", max_depth_));
    }
    if (IsName("not")) {
      const Token at = Cur();
      Next();
      NodePtr node = Make(NodeKind::kNot, at);
      FJORD_ASSIGN_OR_RETURN(NodePtr operand, ParseNot());
      node->kids.push_back(std::move(operand));
      return Seal(std::move(node), at);
    }
    return ParseCompare();
  }

  absl::StatusOr<NodePtr> ParseCompare() {
    const Token at = Cur();
    FJORD_ASSIGN_OR_RETURN(NodePtr first, ParseMath1());
    NodePtr node;
    while (true) {
      std::string op;
      if (Cur().type == Tok::kOp &&
          (Cur().text == "==" || Cur().text == "!=" || Cur().text == "<" || Cur().text == ">" ||
           Cur().text == "<=" || Cur().text == ">=")) {
        op = Cur().text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().text == "in") {
        op = "not in";
        Next();
        Next();
      } else {
        break;
      }
      if (node == nullptr) {
        node = Make(NodeKind::kCompare, at);
        node->kids.push_back(std::move(first));
      }
      node->names.push_back(op);
      FJORD_ASSIGN_OR_RETURN(NodePtr operand, ParseMath1());
      node->kids.push_back(std::move(operand));
    }
    if (node == nullptr) return first;
    return Seal(std::move(node), at);
  }

  using Sub = absl::StatusOr<NodePtr> (Parser::*)();
  absl::StatusOr<NodePtr> Binary(Sub sub, std::initializer_list<absl::string_view> ops) {
    const Token at = Cur();
    FJORD_ASSIGN_OR_RETURN(NodePtr left, (this->*sub)());
    while (true) {
      std::string op;
      for (absl::string_view o : ops) {
        if (IsOp(o)) op = std::string(o);
      }
      if (op.empty()) return left;
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr right, (this->*sub)());
      NodePtr node = Make(NodeKind::kBinary, at);
      node->name = op;
      node->kids.push_back(std::move(left));
      node->kids.push_back(std::move(right));
      FJORD_ASSIGN_OR_RETURN(left, Seal(std::move(node), at));
    }
  }
  absl::StatusOr<NodePtr> ParseMath1() { return Binary(&Parser::ParseConcat, {"+", "-"}); }
  absl::StatusOr<NodePtr> ParseConcat() { return Binary(&Parser::ParseMath2, {"~"}); }
  absl::StatusOr<NodePtr> ParseMath2() { return Binary(&Parser::ParsePow, {"*", "/", "//", "%"}); }
  absl::StatusOr<NodePtr> ParsePow() { return Binary(&Parser::ParseUnaryFiltered, {"**"}); }
  absl::StatusOr<NodePtr> ParseUnaryFiltered() { return ParseUnary(true); }

  absl::StatusOr<NodePtr> ParseUnary(bool with_filter) {
    Guard guard(this);
    if (depth_ > max_depth_) {
      return Error(Cur(), absl::StrCat("expression nested deeper than ", max_depth_));
    }
    const Token at = Cur();
    NodePtr node;
    if (IsOp("-") || IsOp("+")) {
      node = Make(IsOp("-") ? NodeKind::kNeg : NodeKind::kPos, at);
      Next();
      FJORD_ASSIGN_OR_RETURN(NodePtr operand, ParseUnary(false));
      node->kids.push_back(std::move(operand));
      FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(node), at));
    } else {
      FJORD_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    FJORD_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) return ParseFilterExpr(std::move(node));
    return node;
  }

  absl::StatusOr<NodePtr> ParsePrimary() {
    const Token at = Cur();
    switch (at.type) {
      case Tok::kName: {
        Next();
        NodePtr node = Make(NodeKind::kLiteral, at);
        if (at.text == "true" || at.text == "True") {
          node->literal = Value::Bool(true);
        } else if (at.text == "false" || at.text == "False") {
          node->literal = Value::Bool(false);
        } else if (at.text == "none" || at.text == "None") {
          node->literal = Value::None();
        } else {
          node->kind = NodeKind::kName;
          node->name = at.text;
        }
        return node;
      }
      case Tok::kString: {
        std::string text;
        while (Cur().type == Tok::kString) {
          text += Cur().text;
          Next();
        }
        NodePtr node = Make(NodeKind::kLiteral, at);
        node->literal = Value::Plain(std::move(text));
        return node;
      }
      case Tok::kInt:
      case Tok::kFloat: {
        Next();
        NodePtr node = Make(NodeKind::kLiteral, at);
        node->literal = at.type == Tok::kInt ? Value::Int(at.ival) : Value::Float(at.fval);
        return node;
      }
      case Tok::kOp:
        if (at.text == "(") {
          Next();
          if (IsOp(")")) {
            Next();
            NodePtr node = Make(NodeKind::kListLit, at);
            node->literal.tuple = true;
            return node;
          }
          FJORD_ASSIGN_OR_RETURN(NodePtr inner, ParseTuple());
          FJORD_RETURN_IF_ERROR(Expect(")"));
          return inner;
        }
        if (at.text == "[") {
          Next();
          NodePtr node = Make(NodeKind::kListLit, at);
          while (!IsOp("]")) {
            FJORD_ASSIGN_OR_RETURN(NodePtr item, ParseExpression());
            node->kids.push_back(std::move(item));
            if (!IsOp(",")) break;
            Next();
          }
          FJORD_RETURN_IF_ERROR(Expect("]"));
          return Seal(std::move(node), at);
        }
        if (at.text == "{") {
          Next();
          NodePtr node = Make(NodeKind::kDictLit, at);
          while (!IsOp("}")) {
            FJORD_ASSIGN_OR_RETURN(NodePtr key, ParseExpression());
            FJORD_RETURN_IF_ERROR(Expect(":"));
            FJORD_ASSIGN_OR_RETURN(NodePtr value, ParseExpression());
            node->kids.push_back(std::move(key));
            node->kids.push_back(std::move(value));
            if (!IsOp(",")) break;
            Next();
          }
          FJORD_RETURN_IF_ERROR(Expect("}"));
          return Seal(std::move(node), at);
        }
        break;
      default:
        break;
    }
    return Error(at, absl::StrCat("unexpected ", Describe(at)));
  }

  absl::StatusOr<NodePtr> ParsePostfix(NodePtr node) {
    while (true) {
      const Token at = Cur();
      if (IsOp(".")) {
        Next();
        NodePtr attr = Make(NodeKind::kAttr, at);
        if (Cur().type == Tok::kName) {
          attr->name = Cur().text;
        } else if (Cur().type == Tok::kInt) {
          attr->kind = NodeKind::kSubscript;
          NodePtr index = Make(NodeKind::kLiteral, Cur());
          index->literal = Value::Int(Cur().ival);
          attr->kids.push_back(std::move(node));
          attr->kids.push_back(std::move(index));
          Next();
          FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(attr), at));
          continue;
        } else {
          return Error(Cur(), absl::StrCat("expected an attribute name, got ", Describe(Cur())));
        }
        Next();
        attr->kids.push_back(std::move(node));
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(attr), at));
      } else if (IsOp("[")) {
        Next();
        NodePtr parts[3];
        bool slice = false;
        if (!IsOp(":")) {
          FJORD_ASSIGN_OR_RETURN(parts[0], ParseExpression());
        }
        if (IsOp(":")) {
          slice = true;
          Next();
          if (!IsOp("]") && !IsOp(":")) {
            FJORD_ASSIGN_OR_RETURN(parts[1], ParseExpression());
          }
          if (IsOp(":")) {
            Next();
            if (!IsOp("]")) {
              FJORD_ASSIGN_OR_RETURN(parts[2], ParseExpression());
            }
          }
        }
        FJORD_RETURN_IF_ERROR(Expect("]"));
        NodePtr sub = Make(slice ? NodeKind::kSlice : NodeKind::kSubscript, at);
        sub->kids.push_back(std::move(node));
        for (int k = 0; k < (slice ? 3 : 1); ++k) sub->kids.push_back(std::move(parts[k]));
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(sub), at));
      } else if (IsOp("(")) {
        NodePtr call = Make(NodeKind::kCall, at);
        call->kids.push_back(std::move(node));
        FJORD_RETURN_IF_ERROR(ParseArgs(call.get()));
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(call), at));
      } else {
        return node;
      }
    }
  }

  // '(' [arg (',' arg)*] ')' into node->kids (after what is there) and
  // node->names.
  absl::Status ParseArgs(Node* node) {
    FJORD_RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      std::string keyword;
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "=") {
        keyword = Cur().text;
        Next();
        Next();
      }
      FJORD_ASSIGN_OR_RETURN(NodePtr arg, ParseExpression());
      node->kids.push_back(std::move(arg));
      node->names.push_back(keyword);
      if (!IsOp(",")) break;
      Next();
    }
    return Expect(")");
  }

  absl::StatusOr<NodePtr> ParseFilterExpr(NodePtr node) {
    while (true) {
      const Token at = Cur();
      if (IsOp("|")) {
        Next();
        const Token name_at = Cur();
        FJORD_ASSIGN_OR_RETURN(std::string name, ExpectName());
        if (KnownFilters().count(name) == 0) {
          return Error(name_at, absl::StrCat("no filter named '", name, "'"));
        }
        NodePtr filter = Make(NodeKind::kFilter, at);
        filter->name = name;
        filter->kids.push_back(std::move(node));
        filter->names.push_back("");
        if (IsOp("(")) FJORD_RETURN_IF_ERROR(ParseArgs(filter.get()));
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(filter), at));
      } else if (IsName("is")) {
        Next();
        NodePtr test = Make(NodeKind::kTest, at);
        if (IsName("not")) {
          test->negated = true;
          Next();
        }
        const Token name_at = Cur();
        std::string name;
        if (Cur().type == Tok::kName) {
          name = Cur().text;
        } else if (Cur().type == Tok::kOp) {
          name = Cur().text;
        }
        if (KnownTests().count(name) == 0) {
          return Error(name_at, name.empty() ? "expected a test name after 'is'"
                                             : absl::StrCat("no test named '", name, "'"));
        }
        Next();
        test->name = name;
        test->kids.push_back(std::move(node));
        test->names.push_back("");
        if (IsOp("(")) {
          FJORD_RETURN_IF_ERROR(ParseArgs(test.get()));
        } else if ((Cur().type == Tok::kName || Cur().type == Tok::kString ||
                    Cur().type == Tok::kInt || Cur().type == Tok::kFloat || IsOp("[") ||
                    IsOp("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and") && !IsName("if") &&
                   !IsName("in") && !IsName("not") && !IsName("is")) {
          FJORD_ASSIGN_OR_RETURN(NodePtr arg, ParsePrimary());
          FJORD_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          test->kids.push_back(std::move(arg));
          test->names.push_back("");
        }
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(test), at));
      } else if (IsOp("(")) {
        NodePtr call = Make(NodeKind::kCall, at);
        call->kids.push_back(std::move(node));
        FJORD_RETURN_IF_ERROR(ParseArgs(call.get()));
        FJORD_ASSIGN_OR_RETURN(node, Seal(std::move(call), at));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> toks_;
  size_t p_ = 0;

 public:
  bool has_generation_ = false;

 private:
  const SourceMap& map_;
  int max_depth_;
  int depth_ = 0;
  int loops_ = 0;
};

// ---------------------------------------------------------------------------
// Renderer.

Value FromJson(const nlohmann::ordered_json& j, int64_t origin) {
  Value v;
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      v = Value::None();
      break;
    case nlohmann::ordered_json::value_t::boolean:
      v = Value::Bool(j.get<bool>());
      break;
    case nlohmann::ordered_json::value_t::number_integer:
      v = Value::Int(j.get<int64_t>());
      break;
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      v = u <= static_cast<uint64_t>(INT64_MAX) ? Value::Int(static_cast<int64_t>(u))
                                                : Value::Float(static_cast<double>(u));
      break;
    }
    case nlohmann::ordered_json::value_t::number_float:
      v = Value::Float(j.get<double>());
      break;
    case nlohmann::ordered_json::value_t::string:
      v = Value::String(Tagged(j.get<std::string>(), origin));
      break;
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& item : j) items.push_back(FromJson(item, origin));
      v = Value::MakeList(std::move(items));
      break;
    }
    case nlohmann::ordered_json::value_t::object: {
      auto dict = std::make_shared<Dict>();
      for (const auto& [key, item] : j.items())
        dict->items.emplace_back(key, FromJson(item, origin));
      v = Value::MakeDict(std::move(dict));
      break;
    }
    default:
      v = Value::None();
  }
  v.origin = origin;
  return v;
}

enum class Flow { kNormal, kBreak, kContinue };

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  const Value* Get(size_t index, absl::string_view name) const {
    for (const auto& [k, v] : keyword) {
      if (k == name) return &v;
    }
    return index < positional.size() ? &positional[index] : nullptr;
  }
};

class Renderer {
 public:
  explicit Renderer(const JinjaOptions& options) : options_(options) {
    max_list_ = std::max<int64_t>(1024, options.max_output_bytes / 256);
    max_nesting_ = 8 * options.max_depth + 64;
  }

  absl::Status Run(const Node& root, const nlohmann::ordered_json& context) {
    auto globals = std::make_shared<Dict>();
    for (const char* name : {"raise_exception", "namespace", "range", "dict", "strftime_now"}) {
      Value v;
      v.kind = Value::Kind::kBuiltin;
      v.s = std::make_shared<const Str>(Str{name, {}});
      globals->Set(name, v);
    }
    if (context.is_object()) {
      for (const auto& [key, item] : context.items()) {
        if (key == "messages" && item.is_array()) {
          List messages;
          for (size_t k = 0; k < item.size(); ++k) {
            messages.push_back(FromJson(item[k], static_cast<int64_t>(k)));
            // A message's role and name are the template's header, not its text.
            if (messages.back().kind != Value::Kind::kDict) continue;
            for (auto& [field, value] : messages.back().dict->items) {
              if (field == "role" || field == "name") value = FromJson(item[k][field], -1);
            }
          }
          globals->Set(key, Value::MakeList(std::move(messages)));
        } else {
          globals->Set(key, FromJson(item, -1));
        }
      }
    }
    frames_.push_back(globals);
    frames_.push_back(std::make_shared<Dict>());
    sink_ = &out_;
    return ExecBody(root.bodies[0]).status();
  }

  Str& out() { return out_; }
  std::vector<std::pair<size_t, size_t>>& generation() { return generation_; }

 private:
  // Counts one step and one level of nesting for the life of the guard.
  class Enter {
   public:
    explicit Enter(Renderer* r) : r_(r) { ++r_->nesting_; }
    ~Enter() { --r_->nesting_; }

   private:
    Renderer* r_;
  };
  absl::Status Step(const Node& node) {
    line_ = node.line;
    return CountStep();
  }
  absl::Status CountStep() {
    if (++steps_ > options_.max_steps) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "line ", line_, ": the template took more than ", options_.max_steps, " steps"));
    }
    if (nesting_ > max_nesting_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("line ", line_, ": evaluation nested deeper than ", max_nesting_));
    }
    return absl::OkStatus();
  }
  absl::Status Fail(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("line ", line_, ": ", message));
  }
  absl::Status CheckSize(size_t bytes) {
    if (static_cast<int64_t>(bytes) > options_.max_output_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("line ", line_, ": more than ",
                                                       options_.max_output_bytes,
                                                       " bytes of output or of one string"));
    }
    allocated_ += static_cast<int64_t>(bytes);
    if (allocated_ > 16 * options_.max_output_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("line ", line_, ": the template built more than ",
                       16 * options_.max_output_bytes, " bytes of strings"));
    }
    return absl::OkStatus();
  }
  absl::Status CheckList(size_t items) {
    if (static_cast<int64_t>(items) > max_list_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("line ", line_, ": a list of more than ", max_list_, " items"));
    }
    return absl::OkStatus();
  }
  absl::Status Emit(const Str& s) {
    FJORD_RETURN_IF_ERROR(CheckSize(sink_->text.size() + s.text.size()));
    sink_->Append(s);
    return absl::OkStatus();
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      if (const Value* v = (*it)->Find(name)) return *v;
    }
    return Value::Undefined("'" + name + "' is undefined");
  }

  absl::StatusOr<Flow> ExecBody(const NodeList& body) {
    for (const NodePtr& node : body) {
      FJORD_ASSIGN_OR_RETURN(Flow flow, Exec(*node));
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  // Runs `body` writing into a fresh string, returned.
  absl::StatusOr<Str> Capture(const NodeList& body) {
    Str captured;
    Str* saved = sink_;
    sink_ = &captured;
    absl::StatusOr<Flow> flow = ExecBody(body);
    sink_ = saved;
    if (!flow.ok()) return flow.status();
    return captured;
  }

  absl::StatusOr<Flow> Exec(const Node& node) {
    Enter enter(this);
    FJORD_RETURN_IF_ERROR(Step(node));
    switch (node.kind) {
      case NodeKind::kText:
        FJORD_RETURN_IF_ERROR(Emit(Str{node.name, {}}));
        return Flow::kNormal;
      case NodeKind::kOutput: {
        FJORD_ASSIGN_OR_RETURN(Value v, Eval(*node.kids[0]));
        FJORD_RETURN_IF_ERROR(Emit(ToStr(v)));
        return Flow::kNormal;
      }
      case NodeKind::kIf:
        for (size_t k = 0; k < node.bodies.size(); ++k) {
          if (k < node.kids.size()) {
            FJORD_ASSIGN_OR_RETURN(Value cond, Eval(*node.kids[k]));
            if (!Truthy(cond)) continue;
          }
          return ExecBody(node.bodies[k]);
        }
        return Flow::kNormal;
      case NodeKind::kFor:
        return ExecFor(node);
      case NodeKind::kSet: {
        Value value;
        if (node.block) {
          FJORD_ASSIGN_OR_RETURN(Str s, Capture(node.bodies[0]));
          value = Value::String(std::move(s));
        } else {
          FJORD_ASSIGN_OR_RETURN(value, Eval(*node.kids[0]));
        }
        if (node.attr.empty()) {
          frames_.back()->Set(node.name, std::move(value));
          return Flow::kNormal;
        }
        Value target = Lookup(node.name);
        if (target.kind != Value::Kind::kNamespace) {
          return Fail(
              absl::StrCat("cannot assign attribute on non-namespace object '", node.name, "'"));
        }
        target.dict->Set(node.attr, std::move(value));
        return Flow::kNormal;
      }
      case NodeKind::kMacro: {
        Value v;
        v.kind = Value::Kind::kMacro;
        v.macro = &node;
        frames_.back()->Set(node.name, v);
        return Flow::kNormal;
      }
      case NodeKind::kBreak:
        return Flow::kBreak;
      case NodeKind::kContinue:
        return Flow::kContinue;
      case NodeKind::kBlock: {
        if (node.name != "generation" || sink_ != &out_) return ExecBody(node.bodies[0]);
        const size_t begin = out_.text.size();
        FJORD_ASSIGN_OR_RETURN(Flow flow, ExecBody(node.bodies[0]));
        generation_.emplace_back(begin, out_.text.size());
        return flow;
      }
      default:
        return Fail("internal error: an expression where a statement belongs");
    }
  }

  absl::StatusOr<List> Iterate(const Value& v) {
    switch (v.kind) {
      case Value::Kind::kUndefined:
        return List();
      case Value::Kind::kList:
        return *v.list;
      case Value::Kind::kDict: {
        List keys;
        for (const auto& [k, item] : v.dict->items) keys.push_back(KeyValue(k, v.origin));
        return keys;
      }
      case Value::Kind::kString: {
        List chars;
        const std::vector<size_t> offsets = CodePointOffsets(v.text());
        for (size_t k = 0; k + 1 < offsets.size(); ++k) {
          chars.push_back(Value::String(v.s->Sub(offsets[k], offsets[k + 1])));
        }
        return chars;
      }
      default:
        return Fail(absl::StrCat("'", TypeName(v), "' object is not iterable"));
    }
  }
  static Value KeyValue(const std::string& key, int64_t origin) {
    Value v = Value::String(Tagged(key, origin));
    v.origin = origin;
    return v;
  }

  absl::Status Bind(const std::vector<std::string>& targets, const Value& item, Dict* frame) {
    if (targets.size() == 1) {
      frame->Set(targets[0], item);
      return absl::OkStatus();
    }
    if (item.kind != Value::Kind::kList || item.list->size() != targets.size()) {
      return Fail(absl::StrCat("cannot unpack ", TypeName(item), " into ", targets.size(),
                               " loop variables"));
    }
    for (size_t k = 0; k < targets.size(); ++k) frame->Set(targets[k], (*item.list)[k]);
    return absl::OkStatus();
  }

  absl::StatusOr<Flow> ExecFor(const Node& node) {
    FJORD_ASSIGN_OR_RETURN(Value iterable, Eval(*node.kids[0]));
    FJORD_ASSIGN_OR_RETURN(List items, Iterate(iterable));
    if (node.kids[1] != nullptr) {
      List kept;
      for (Value& item : items) {
        frames_.push_back(std::make_shared<Dict>());
        absl::Status bound = Bind(node.names, item, frames_.back().get());
        absl::StatusOr<Value> cond = bound.ok() ? Eval(*node.kids[1]) : bound;
        frames_.pop_back();
        if (!cond.ok()) return cond.status();
        if (Truthy(*cond)) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (node.bodies[1].empty()) return Flow::kNormal;
      FJORD_ASSIGN_OR_RETURN(Flow flow, ExecBody(node.bodies[1]));
      (void)flow;
      return Flow::kNormal;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      FJORD_RETURN_IF_ERROR(Step(node));
      auto frame = std::make_shared<Dict>();
      auto loop = std::make_shared<Dict>();
      loop->items = {
          {"index0", Value::Int(k)},
          {"index", Value::Int(k + 1)},
          {"revindex0", Value::Int(n - k - 1)},
          {"revindex", Value::Int(n - k)},
          {"first", Value::Bool(k == 0)},
          {"last", Value::Bool(k == n - 1)},
          {"length", Value::Int(n)},
          {"depth", Value::Int(1)},
          {"depth0", Value::Int(0)},
          {"previtem", k > 0 ? items[k - 1] : Value::Undefined("there is no previtem")},
          {"nextitem", k + 1 < n ? items[k + 1] : Value::Undefined("there is no nextitem")}};
      frame->Set("loop", Value::MakeDict(loop));
      FJORD_RETURN_IF_ERROR(Bind(node.names, items[k], frame.get()));
      frames_.push_back(frame);
      absl::StatusOr<Flow> flow = ExecBody(node.bodies[0]);
      frames_.pop_back();
      if (!flow.ok()) return flow.status();
      if (*flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Args> EvalArgs(const Node& node, size_t first) {
    Args args;
    for (size_t k = first; k < node.kids.size(); ++k) {
      FJORD_ASSIGN_OR_RETURN(Value v, Eval(*node.kids[k]));
      const std::string& keyword = node.names[k - (node.kind == NodeKind::kCall ? 1 : 0)];
      if (keyword.empty()) {
        args.positional.push_back(std::move(v));
      } else {
        args.keyword.emplace_back(keyword, std::move(v));
      }
    }
    return args;
  }

  absl::StatusOr<Value> Eval(const Node& node) {
    Enter enter(this);
    FJORD_RETURN_IF_ERROR(Step(node));
    switch (node.kind) {
      case NodeKind::kLiteral:
        return node.literal;
      case NodeKind::kName:
        return Lookup(node.name);
      case NodeKind::kListLit: {
        List items;
        for (const NodePtr& kid : node.kids) {
          FJORD_ASSIGN_OR_RETURN(Value v, Eval(*kid));
          items.push_back(std::move(v));
        }
        Value list = Value::MakeList(std::move(items));
        list.tuple = node.literal.tuple;
        return list;
      }
      case NodeKind::kDictLit: {
        auto dict = std::make_shared<Dict>();
        for (size_t k = 0; k + 1 < node.kids.size(); k += 2) {
          FJORD_ASSIGN_OR_RETURN(Value key, Eval(*node.kids[k]));
          FJORD_ASSIGN_OR_RETURN(Value value, Eval(*node.kids[k + 1]));
          if (key.kind != Value::Kind::kString) {
            return Fail("fjord's Jinja supports dict literals with string keys only");
          }
          dict->Set(key.text(), std::move(value));
        }
        return Value::MakeDict(std::move(dict));
      }
      case NodeKind::kAttr: {
        FJORD_ASSIGN_OR_RETURN(Value obj, Eval(*node.kids[0]));
        return GetAttr(obj, node.name);
      }
      case NodeKind::kSubscript: {
        FJORD_ASSIGN_OR_RETURN(Value obj, Eval(*node.kids[0]));
        FJORD_ASSIGN_OR_RETURN(Value key, Eval(*node.kids[1]));
        return GetItem(obj, key);
      }
      case NodeKind::kSlice:
        return EvalSlice(node);
      case NodeKind::kCall:
        return EvalCall(node);
      case NodeKind::kFilter: {
        FJORD_ASSIGN_OR_RETURN(Value in, Eval(*node.kids[0]));
        FJORD_ASSIGN_OR_RETURN(Args args, EvalArgs(node, 1));
        return Filter(node.name, in, args);
      }
      case NodeKind::kTest: {
        FJORD_ASSIGN_OR_RETURN(Value in, Eval(*node.kids[0]));
        FJORD_ASSIGN_OR_RETURN(Args args, EvalArgs(node, 1));
        FJORD_ASSIGN_OR_RETURN(bool result, Test(node.name, in, args));
        return Value::Bool(result != node.negated);
      }
      case NodeKind::kNeg:
      case NodeKind::kPos: {
        FJORD_ASSIGN_OR_RETURN(Value v, Eval(*node.kids[0]));
        if (!v.is_number()) {
          if (v.undefined()) return Fail(v.text());
          return Fail(absl::StrCat("bad operand type for unary -: '", TypeName(v), "'"));
        }
        if (node.kind == NodeKind::kPos)
          return v.kind == Value::Kind::kBool ? Value::Int(v.AsInt()) : v;
        if (v.kind == Value::Kind::kFloat) return Value::Float(-v.f);
        if (v.AsInt() == INT64_MIN) return Fail("integer overflow");
        return Value::Int(-v.AsInt());
      }
      case NodeKind::kBinary: {
        FJORD_ASSIGN_OR_RETURN(Value a, Eval(*node.kids[0]));
        FJORD_ASSIGN_OR_RETURN(Value b, Eval(*node.kids[1]));
        return Binary(node.name, a, b);
      }
      case NodeKind::kAnd: {
        FJORD_ASSIGN_OR_RETURN(Value a, Eval(*node.kids[0]));
        if (!Truthy(a)) return a;
        return Eval(*node.kids[1]);
      }
      case NodeKind::kOr: {
        FJORD_ASSIGN_OR_RETURN(Value a, Eval(*node.kids[0]));
        if (Truthy(a)) return a;
        return Eval(*node.kids[1]);
      }
      case NodeKind::kNot: {
        FJORD_ASSIGN_OR_RETURN(Value a, Eval(*node.kids[0]));
        return Value::Bool(!Truthy(a));
      }
      case NodeKind::kCompare: {
        FJORD_ASSIGN_OR_RETURN(Value left, Eval(*node.kids[0]));
        for (size_t k = 0; k < node.names.size(); ++k) {
          FJORD_ASSIGN_OR_RETURN(Value right, Eval(*node.kids[k + 1]));
          FJORD_ASSIGN_OR_RETURN(bool holds, CompareOp(node.names[k], left, right));
          if (!holds) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case NodeKind::kCond: {
        FJORD_ASSIGN_OR_RETURN(Value cond, Eval(*node.kids[1]));
        if (Truthy(cond)) return Eval(*node.kids[0]);
        if (node.kids[2] == nullptr) return Value::Undefined("the inline if had no else");
        return Eval(*node.kids[2]);
      }
      default:
        return Fail("internal error: a statement where an expression belongs");
    }
  }

  absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
    if (obj.undefined()) return Fail(obj.text());
    if (obj.kind == Value::Kind::kDict || obj.kind == Value::Kind::kNamespace) {
      if (const Value* v = obj.dict->Find(name)) return *v;
    }
    return Value::Undefined(
        absl::StrCat("'", TypeName(obj), " object' has no attribute '", name, "'"));
  }

  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
    if (obj.undefined()) return Fail(obj.text());
    if (obj.kind == Value::Kind::kDict || obj.kind == Value::Kind::kNamespace) {
      if (key.kind == Value::Kind::kString) {
        if (const Value* v = obj.dict->Find(key.text())) return *v;
      }
      return Value::Undefined(
          absl::StrCat("'", TypeName(obj), " object' has no attribute ", Repr(key)));
    }
    if ((obj.kind == Value::Kind::kList || obj.kind == Value::Kind::kString) && key.is_integer()) {
      if (obj.kind == Value::Kind::kList) {
        int64_t n = static_cast<int64_t>(obj.list->size());
        int64_t k = key.AsInt() < 0 ? key.AsInt() + n : key.AsInt();
        if (k >= 0 && k < n) return (*obj.list)[k];
      } else {
        const std::vector<size_t> offsets = CodePointOffsets(obj.text());
        int64_t n = static_cast<int64_t>(offsets.size()) - 1;
        int64_t k = key.AsInt() < 0 ? key.AsInt() + n : key.AsInt();
        if (k >= 0 && k < n) return Value::String(obj.s->Sub(offsets[k], offsets[k + 1]));
      }
      return Value::Undefined(
          absl::StrCat("'", TypeName(obj), " object' has no element ", key.AsInt()));
    }
    return Value::Undefined(
        absl::StrCat("'", TypeName(obj), " object' has no attribute ", Repr(key)));
  }

  // Python's slice.indices(n) then the selected indices.
  absl::StatusOr<std::vector<int64_t>> SliceIndices(int64_t n, const Value* start_v,
                                                    const Value* stop_v, const Value* step_v) {
    auto get = [&](const Value* v, int64_t def) -> absl::StatusOr<int64_t> {
      if (v == nullptr || v->kind == Value::Kind::kNone || v->undefined()) return def;
      if (!v->is_integer()) return Fail("slice indices must be integers or None");
      return v->AsInt();
    };
    FJORD_ASSIGN_OR_RETURN(int64_t step, get(step_v, 1));
    if (step == 0) return Fail("slice step cannot be zero");
    const int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? n - 1 : n;
    auto clamp = [&](int64_t x) {
      if (x < 0) x = std::max(x + n, lower);
      return std::min(x, upper);
    };
    FJORD_ASSIGN_OR_RETURN(int64_t start, get(start_v, step < 0 ? upper : lower));
    FJORD_ASSIGN_OR_RETURN(int64_t stop, get(stop_v, step < 0 ? lower : upper));
    if (start_v != nullptr && start_v->is_integer()) start = clamp(start);
    if (stop_v != nullptr && stop_v->is_integer()) stop = clamp(stop);
    std::vector<int64_t> indices;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) indices.push_back(k);
    return indices;
  }

  absl::StatusOr<Value> EvalSlice(const Node& node) {
    FJORD_ASSIGN_OR_RETURN(Value obj, Eval(*node.kids[0]));
    Value parts[3];
    bool present[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (node.kids[k + 1] == nullptr) continue;
      FJORD_ASSIGN_OR_RETURN(parts[k], Eval(*node.kids[k + 1]));
      present[k] = true;
    }
    if (obj.undefined()) return Fail(obj.text());
    const bool is_string = obj.kind == Value::Kind::kString;
    if (!is_string && obj.kind != Value::Kind::kList) {
      return Fail(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
    }
    std::vector<size_t> offsets;
    int64_t n;
    if (is_string) {
      offsets = CodePointOffsets(obj.text());
      n = static_cast<int64_t>(offsets.size()) - 1;
    } else {
      n = static_cast<int64_t>(obj.list->size());
    }
    FJORD_ASSIGN_OR_RETURN(
        std::vector<int64_t> indices,
        SliceIndices(n, present[0] ? &parts[0] : nullptr, present[1] ? &parts[1] : nullptr,
                     present[2] ? &parts[2] : nullptr));
    if (is_string) {
      const int64_t step = indices.size() >= 2 ? indices[1] - indices[0] : 1;
      if (step == 1) {
        if (indices.empty()) return Value::Plain("");
        return Value::String(obj.s->Sub(offsets[indices.front()], offsets[indices.back() + 1]));
      }
      Str out;
      for (int64_t k : indices) out.Append(obj.s->Sub(offsets[k], offsets[k + 1]));
      return Value::String(std::move(out));
    }
    List items;
    for (int64_t k : indices) items.push_back((*obj.list)[k]);
    return Value::MakeList(std::move(items));
  }

  absl::StatusOr<bool> CompareOp(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return Equals(a, b);
    if (op == "!=") return !Equals(a, b);
    if (op == "in" || op == "not in") {
      FJORD_ASSIGN_OR_RETURN(bool in, Contains(b, a));
      return in == (op == "in");
    }
    absl::StatusOr<int> c = Compare(a, b, op);
    if (!c.ok()) return Fail(c.status().message());
    if (op == "<") return *c < 0;
    if (op == ">") return *c > 0;
    if (op == "<=") return *c <= 0;
    return *c >= 0;
  }

  absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
    switch (container.kind) {
      case Value::Kind::kUndefined:
        return false;
      case Value::Kind::kString:
        if (item.kind != Value::Kind::kString) {
          return Fail(
              absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
        }
        return container.text().find(item.text()) != std::string::npos;
      case Value::Kind::kList:
        for (const Value& v : *container.list) {
          if (Equals(v, item)) return true;
        }
        return false;
      case Value::Kind::kDict:
        return item.kind == Value::Kind::kString && container.dict->Find(item.text()) != nullptr;
      default:
        return Fail(absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
    }
  }

  absl::StatusOr<Value> Binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") {
      Str s = ToStr(a);
      const Str t = ToStr(b);
      FJORD_RETURN_IF_ERROR(CheckSize(s.text.size() + t.text.size()));
      s.Append(t);
      return Value::String(std::move(s));
    }
    if (a.undefined()) return Fail(a.text());
    if (b.undefined()) return Fail(b.text());
    auto unsupported = [&]() {
      return Fail(absl::StrCat("unsupported operand type(s) for ", op, ": '", TypeName(a),
                               "' and '", TypeName(b), "'"));
    };
    if (op == "+") {
      if (a.kind == Value::Kind::kString && b.kind == Value::Kind::kString) {
        FJORD_RETURN_IF_ERROR(CheckSize(a.text().size() + b.text().size()));
        Str s = *a.s;
        s.Append(*b.s);
        return Value::String(std::move(s));
      }
      if (a.kind == Value::Kind::kList && b.kind == Value::Kind::kList) {
        if (a.tuple != b.tuple) {
          return Fail(absl::StrCat("can only concatenate ", a.tuple ? "tuple" : "list", " (not \"",
                                   b.tuple ? "tuple" : "list", "\") to ",
                                   a.tuple ? "tuple" : "list"));
        }
        FJORD_RETURN_IF_ERROR(CheckList(a.list->size() + b.list->size()));
        List items = *a.list;
        items.insert(items.end(), b.list->begin(), b.list->end());
        Value out = Value::MakeList(std::move(items));
        out.tuple = a.tuple;
        return out;
      }
    }
    if (op == "%" && a.kind == Value::Kind::kString) return Printf(*a.s, b);
    if (op == "*" && (a.kind == Value::Kind::kString || a.kind == Value::Kind::kList ||
                      b.kind == Value::Kind::kString || b.kind == Value::Kind::kList)) {
      const Value& seq = a.is_integer() ? b : a;
      const Value& count = a.is_integer() ? a : b;
      if (!count.is_integer() || seq.is_integer()) return unsupported();
      const int64_t times = std::max<int64_t>(0, count.AsInt());
      if (seq.kind == Value::Kind::kString) {
        const size_t unit = seq.text().size();
        if (unit > 0 && times > options_.max_output_bytes / static_cast<int64_t>(unit)) {
          return CheckSize(static_cast<size_t>(options_.max_output_bytes) + 1);
        }
        FJORD_RETURN_IF_ERROR(CheckSize(unit * times));
        Str s;
        for (int64_t k = 0; k < times; ++k) s.Append(*seq.s);
        return Value::String(std::move(s));
      }
      const size_t unit = seq.list->size();
      if (unit > 0 && times > max_list_ / static_cast<int64_t>(unit)) {
        return CheckList(static_cast<size_t>(max_list_) + 1);
      }
      List items;
      for (int64_t k = 0; k < times; ++k)
        items.insert(items.end(), seq.list->begin(), seq.list->end());
      Value out = Value::MakeList(std::move(items));
      out.tuple = seq.tuple;
      return out;
    }
    if (!a.is_number() || !b.is_number()) return unsupported();
    const bool ints = a.is_integer() && b.is_integer();
    if (ints && op != "/") {
      const int64_t x = a.AsInt(), y = b.AsInt();
      int64_t r = 0;
      if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value::Int(r);
      if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value::Int(r);
      if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value::Int(r);
      if (op == "//" || op == "%") {
        if (y == 0) return Fail("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) return Fail("integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::Int(op == "//" ? q : m);
      }
      if (op == "**") {
        if (y < 0) return Value::Float(std::pow(static_cast<double>(x), static_cast<double>(y)));
        int64_t result = 1, base = x;
        for (int64_t e = y; e > 0; e >>= 1) {
          if ((e & 1) && __builtin_mul_overflow(result, base, &result))
            return Fail("integer overflow");
          if (e > 1 && __builtin_mul_overflow(base, base, &base)) return Fail("integer overflow");
        }
        return Value::Int(result);
      }
      return Fail("integer overflow");
    }
    const double x = a.AsFloat(), y = b.AsFloat();
    if (op == "+") return Value::Float(x + y);
    if (op == "-") return Value::Float(x - y);
    if (op == "*") return Value::Float(x * y);
    if (op == "**") return Value::Float(std::pow(x, y));
    if (y == 0) return Fail("division by zero");
    if (op == "/") return Value::Float(x / y);
    if (op == "//") return Value::Float(std::floor(x / y));
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value::Float(m);
  }

  // ---- calls -------------------------------------------------------------

  absl::StatusOr<Value> EvalCall(const Node& node) {
    const Node& callee = *node.kids[0];
    if (callee.kind == NodeKind::kAttr) {
      FJORD_ASSIGN_OR_RETURN(Value obj, Eval(*callee.kids[0]));
      if (obj.undefined()) return Fail(obj.text());
      if (obj.kind == Value::Kind::kString ||
          (obj.kind == Value::Kind::kDict && obj.dict->Find(callee.name) == nullptr)) {
        FJORD_ASSIGN_OR_RETURN(Args args, EvalArgs(node, 1));
        return Method(obj, callee.name, args);
      }
      FJORD_ASSIGN_OR_RETURN(Value fn, GetAttr(obj, callee.name));
      FJORD_ASSIGN_OR_RETURN(Args args, EvalArgs(node, 1));
      return CallValue(fn, args);
    }
    FJORD_ASSIGN_OR_RETURN(Value fn, Eval(callee));
    FJORD_ASSIGN_OR_RETURN(Args args, EvalArgs(node, 1));
    return CallValue(fn, args);
  }

  absl::StatusOr<Value> CallValue(const Value& fn, const Args& args) {
    if (fn.kind == Value::Kind::kMacro) return CallMacro(*fn.macro, args);
    if (fn.kind != Value::Kind::kBuiltin) {
      if (fn.undefined()) return Fail(fn.text());
      return Fail(absl::StrCat("'", TypeName(fn), "' object is not callable"));
    }
    const std::string& name = fn.text();
    if (name == "raise_exception") {
      const Value* message = args.Get(0, "message");
      return Fail(
          absl::StrCat("raise_exception: ", message == nullptr ? "" : ToStr(*message).text));
    }
    if (name == "namespace" || name == "dict") {
      auto dict = std::make_shared<Dict>();
      for (const Value& v : args.positional) {
        if (v.kind != Value::Kind::kDict) return Fail(name + "() takes a dict or keywords");
        for (const auto& [k, item] : v.dict->items) dict->Set(k, item);
      }
      for (const auto& [k, item] : args.keyword) dict->Set(k, item);
      return Value::MakeDict(std::move(dict),
                             name == "namespace" ? Value::Kind::kNamespace : Value::Kind::kDict);
    }
    if (name == "range") {
      std::vector<int64_t> bounds;
      for (const Value& v : args.positional) {
        if (!v.is_integer()) return Fail("range() arguments must be integers");
        bounds.push_back(v.AsInt());
      }
      if (bounds.empty() || bounds.size() > 3) return Fail("range() takes 1 to 3 arguments");
      const int64_t start = bounds.size() == 1 ? 0 : bounds[0];
      const int64_t stop = bounds.size() == 1 ? bounds[0] : bounds[1];
      const int64_t step = bounds.size() == 3 ? bounds[2] : 1;
      if (step == 0) return Fail("range() arg 3 must not be zero");
      List items;
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        FJORD_RETURN_IF_ERROR(CheckList(items.size() + 1));
        items.push_back(Value::Int(k));
        if ((step > 0 && k > INT64_MAX - step) || (step < 0 && k < INT64_MIN - step)) break;
      }
      return Value::MakeList(std::move(items));
    }
    if (name == "strftime_now") {
      const Value* format = args.Get(0, "format");
      if (format == nullptr || format->kind != Value::Kind::kString) {
        return Fail("strftime_now() takes a format string");
      }
      std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), format->text().c_str(), &local);
      return Value::Plain(std::string(buf, n));
    }
    return Fail("unknown builtin " + name);
  }

  absl::StatusOr<Value> CallMacro(const Node& macro, const Args& args) {
    if (args.positional.size() > macro.names.size()) {
      return Fail(absl::StrCat("macro '", macro.name, "' takes not more than ", macro.names.size(),
                               " arguments"));
    }
    auto frame = std::make_shared<Dict>();
    // The macro sees the context and the template's top-level names, not the caller's.
    std::vector<std::shared_ptr<Dict>> saved = {frames_[0], frames_[1], frame};
    std::swap(saved, frames_);
    absl::Status status;
    for (size_t k = 0; k < macro.names.size() && status.ok(); ++k) {
      const Value* given = args.Get(k, macro.names[k]);
      if (k < args.positional.size()) given = &args.positional[k];
      if (given != nullptr) {
        frame->Set(macro.names[k], *given);
      } else if (macro.kids[k] != nullptr) {
        absl::StatusOr<Value> def = Eval(*macro.kids[k]);
        if (def.ok()) {
          frame->Set(macro.names[k], *def);
        } else {
          status = def.status();
        }
      } else {
        frame->Set(macro.names[k], Value::Undefined(absl::StrCat("parameter '", macro.names[k],
                                                                 "' was not provided")));
      }
    }
    absl::StatusOr<Str> body = status.ok() ? Capture(macro.bodies[0]) : status;
    std::swap(saved, frames_);
    if (!body.ok()) return body.status();
    return Value::String(std::move(*body));
  }

  // ---- methods -----------------------------------------------------------

  absl::StatusOr<Value> Method(const Value& obj, const std::string& name, const Args& args) {
    auto arg_string = [&](size_t k, absl::string_view kw) -> absl::StatusOr<const Value*> {
      const Value* v = args.Get(k, kw);
      if (v == nullptr || v->kind == Value::Kind::kNone) return nullptr;
      if (v->kind != Value::Kind::kString) {
        return Fail(absl::StrCat(name, "() argument must be str, not ", TypeName(*v)));
      }
      return v;
    };
    if (obj.kind == Value::Kind::kDict) {
      if (name == "get") {
        const Value* key = args.Get(0, "key");
        const Value* def = args.Get(1, "default");
        if (key != nullptr && key->kind == Value::Kind::kString) {
          if (const Value* v = obj.dict->Find(key->text())) return *v;
        }
        return def != nullptr ? *def : Value::None();
      }
      if (name == "items" || name == "keys" || name == "values") {
        List items;
        for (const auto& [k, v] : obj.dict->items) {
          if (name == "keys") {
            items.push_back(KeyValue(k, obj.origin));
          } else if (name == "values") {
            items.push_back(v);
          } else {
            items.push_back(Value::MakeTuple({KeyValue(k, obj.origin), v}));
          }
        }
        return Value::MakeList(std::move(items));
      }
      return Fail(absl::StrCat("'dict object' has no attribute '", name, "'"));
    }
    const Str& s = *obj.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      FJORD_ASSIGN_OR_RETURN(const Value* chars, arg_string(0, "chars"));
      return Value::String(StripStr(s, chars == nullptr ? nullptr : &chars->text(),
                                    name != "rstrip", name != "lstrip"));
    }
    if (name == "upper") return Value::Plain(AsciiUpper(s.text));
    if (name == "lower") return Value::Plain(AsciiLower(s.text));
    if (name == "title") return Value::Plain(Title(s.text));
    if (name == "capitalize") return Value::Plain(Capitalize(s.text));
    if (name == "startswith" || name == "endswith") {
      const Value* prefix = args.Get(0, "prefix");
      std::vector<std::string> options;
      if (prefix != nullptr && prefix->kind == Value::Kind::kString) {
        options.push_back(prefix->text());
      } else if (prefix != nullptr && prefix->kind == Value::Kind::kList) {
        for (const Value& v : *prefix->list) {
          if (v.kind != Value::Kind::kString) return Fail(name + "() takes str or a tuple of str");
          options.push_back(v.text());
        }
      } else {
        return Fail(name + "() takes str or a tuple of str");
      }
      for (const std::string& o : options) {
        if (name == "startswith" ? absl::StartsWith(s.text, o) : absl::EndsWith(s.text, o)) {
          return Value::Bool(true);
        }
      }
      return Value::Bool(false);
    }
    if (name == "split" || name == "rsplit") {
      FJORD_ASSIGN_OR_RETURN(const Value* sep, arg_string(0, "sep"));
      const Value* max_v = args.Get(1, "maxsplit");
      const int64_t maxsplit = max_v != nullptr && max_v->is_integer() ? max_v->AsInt() : -1;
      return Split(s, sep == nullptr ? nullptr : &sep->text(), maxsplit, name == "rsplit");
    }
    if (name == "replace") {
      FJORD_ASSIGN_OR_RETURN(const Value* old_v, arg_string(0, "old"));
      FJORD_ASSIGN_OR_RETURN(const Value* new_v, arg_string(1, "new"));
      if (old_v == nullptr || new_v == nullptr) return Fail("replace() takes two strings");
      const Value* count = args.Get(2, "count");
      return Replace(s, old_v->text(), *new_v->s,
                     count != nullptr && count->is_integer() ? count->AsInt() : -1);
    }
    if (name == "find" || name == "count") {
      FJORD_ASSIGN_OR_RETURN(const Value* sub, arg_string(0, "sub"));
      if (sub == nullptr) return Fail(name + "() takes a string");
      if (name == "find") {
        const size_t at = s.text.find(sub->text());
        return Value::Int(at == std::string::npos ? -1
                                                  : static_cast<int64_t>(CodePointCount(
                                                        absl::string_view(s.text).substr(0, at))));
      }
      if (sub->text().empty()) return Value::Int(static_cast<int64_t>(CodePointCount(s.text)) + 1);
      int64_t n = 0;
      for (size_t at = s.text.find(sub->text()); at != std::string::npos;
           at = s.text.find(sub->text(), at + sub->text().size())) {
        ++n;
      }
      return Value::Int(n);
    }
    if (name == "join") {
      const Value* items = args.Get(0, "iterable");
      if (items == nullptr) return Fail("join() takes an iterable");
      FJORD_ASSIGN_OR_RETURN(List list, Iterate(*items));
      Str out;
      for (size_t k = 0; k < list.size(); ++k) {
        if (list[k].kind != Value::Kind::kString) {
          return Fail(absl::StrCat("sequence item ", k, ": expected str instance, ",
                                   TypeName(list[k]), " found"));
        }
        if (k > 0) out.Append(s);
        out.Append(*list[k].s);
        FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
      }
      return Value::String(std::move(out));
    }
    return Fail(absl::StrCat("'str object' has no attribute '", name, "'"));
  }

  static std::string Title(const std::string& text) {
    std::string out = text;
    bool prev_cased = false;
    for (char& c : out) {
      if (IsAsciiAlpha(c)) {
        c = prev_cased ? AsciiLower(std::string(1, c))[0] : AsciiUpper(std::string(1, c))[0];
        prev_cased = true;
      } else {
        prev_cased = false;
      }
    }
    return out;
  }
  // jinja2's title filter: words begin after whitespace, '-', '(', '{', '['
  // or '<'; each word's first character upper-cased, the rest lower-cased.
  static std::string TitleFilter(const std::string& text) {
    std::string out = text;
    bool word_start = true;
    for (char& c : out) {
      const bool separator = IsSpace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
      if (separator) {
        word_start = true;
        continue;
      }
      c = word_start ? AsciiUpper(std::string(1, c))[0] : AsciiLower(std::string(1, c))[0];
      word_start = false;
    }
    return out;
  }

  // Python's `format % args` for %s %r %d %i %%: args a tuple, a dict (for
  // %(name)s) or one value.
  absl::StatusOr<Value> Printf(const Str& format, const Value& args) {
    std::vector<Value> values;
    if (args.kind == Value::Kind::kList && args.tuple) {
      values = *args.list;
    } else {
      values.push_back(args);
    }
    const bool mapping = args.kind == Value::Kind::kDict;
    size_t next = 0;
    Str out;
    const std::string& f = format.text;
    size_t start = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      if (f[i] != '%') continue;
      out.Append(format.Sub(start, i));
      if (i + 1 >= f.size()) return Fail("incomplete format");
      size_t j = i + 1;
      const Value* value = nullptr;
      if (f[j] == '(' && mapping) {
        const size_t close = f.find(')', j);
        if (close == std::string::npos) return Fail("incomplete format key");
        value = args.dict->Find(absl::string_view(f).substr(j + 1, close - j - 1));
        if (value == nullptr) return Fail("format key not found");
        j = close + 1;
      }
      if (j >= f.size()) return Fail("incomplete format");
      const char conv = f[j];
      if (conv == '%') {
        out.Append("%");
      } else if (conv == 's' || conv == 'r' || conv == 'd' || conv == 'i') {
        if (value == nullptr) {
          if (mapping && next == 0 && values.size() == 1) {
            value = &values[0];
            ++next;
          } else if (next < values.size()) {
            value = &values[next++];
          } else {
            return Fail("not enough arguments for format string");
          }
        }
        if (conv == 's') {
          out.Append(ToStr(*value));
        } else if (conv == 'r') {
          out.Append(Repr(*value));
        } else {
          if (!value->is_number()) return Fail("%d format: a real number is required");
          out.Append(std::to_string(value->kind == Value::Kind::kFloat
                                        ? static_cast<int64_t>(std::trunc(value->f))
                                        : value->AsInt()));
        }
      } else {
        return Fail(absl::StrCat("unsupported format character '", std::string(1, conv), "'"));
      }
      FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
      start = j + 1;
      i = j;
    }
    out.Append(format.Sub(start, f.size()));
    if (!mapping && next < values.size() &&
        !(values.size() == 1 && next == 0 &&
          (args.kind == Value::Kind::kList || args.kind == Value::Kind::kDict))) {
      if (!(args.kind == Value::Kind::kList && args.tuple && values.empty())) {
        return Fail("not all arguments converted during string formatting");
      }
    }
    return Value::String(std::move(out));
  }

  static std::string Capitalize(const std::string& text) {
    std::string out = AsciiLower(text);
    if (!out.empty()) out[0] = AsciiUpper(out.substr(0, 1))[0];
    return out;
  }

  absl::StatusOr<Value> Split(const Str& s, const std::string* sep, int64_t maxsplit,
                              bool from_right) {
    std::vector<std::pair<size_t, size_t>> parts;  // byte ranges
    const std::string& t = s.text;
    if (sep != nullptr) {
      if (sep->empty()) return Fail("empty separator");
      if (!from_right) {
        size_t start = 0;
        while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
          const size_t at = t.find(*sep, start);
          if (at == std::string::npos) break;
          parts.emplace_back(start, at);
          start = at + sep->size();
        }
        parts.emplace_back(start, t.size());
      } else {
        size_t end = t.size();
        std::vector<std::pair<size_t, size_t>> rev;
        while (maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) {
          if (end < sep->size()) break;
          const size_t at = t.rfind(*sep, end - sep->size());
          if (at == std::string::npos) break;
          rev.emplace_back(at + sep->size(), end);
          end = at;
        }
        rev.emplace_back(0, end);
        parts.assign(rev.rbegin(), rev.rend());
      }
    } else {
      // Runs of whitespace separate; no empty parts.
      std::vector<std::pair<size_t, size_t>> words;
      size_t i = 0;
      while (i < t.size()) {
        size_t n = 0;
        while (i < t.size() && IsPySpace(DecodeAt(t, i, &n))) i += n;
        if (i >= t.size()) break;
        const size_t start = i;
        while (i < t.size() && !IsPySpace(DecodeAt(t, i, &n))) i += n;
        words.emplace_back(start, i);
      }
      if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
        if (!from_right) {
          const size_t rest_start = words[maxsplit].first;
          words.resize(maxsplit);
          Str rest = StripStr(s.Sub(rest_start, t.size()), nullptr, false, true);
          List items;
          for (auto [b, e] : words) items.push_back(Value::String(s.Sub(b, e)));
          items.push_back(Value::String(std::move(rest)));
          return Value::MakeList(std::move(items));
        }
        const size_t rest_end = words[words.size() - maxsplit - 1].second;
        List items;
        items.push_back(Value::String(StripStr(s.Sub(0, rest_end), nullptr, true, false)));
        for (size_t k = words.size() - maxsplit; k < words.size(); ++k) {
          items.push_back(Value::String(s.Sub(words[k].first, words[k].second)));
        }
        return Value::MakeList(std::move(items));
      }
      parts = std::move(words);
    }
    FJORD_RETURN_IF_ERROR(CheckList(parts.size()));
    List items;
    for (auto [b, e] : parts) items.push_back(Value::String(s.Sub(b, e)));
    return Value::MakeList(std::move(items));
  }

  absl::StatusOr<Value> Replace(const Str& s, const std::string& old, const Str& replacement,
                                int64_t count) {
    Str out;
    const std::string& t = s.text;
    if (old.empty()) {
      // Python inserts the replacement between every code point.
      const std::vector<size_t> offsets = CodePointOffsets(t);
      int64_t done = 0;
      for (size_t k = 0; k < offsets.size(); ++k) {
        if (count < 0 || done < count) {
          out.Append(replacement);
          ++done;
        }
        if (k + 1 < offsets.size()) out.Append(s.Sub(offsets[k], offsets[k + 1]));
        FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
      }
      return Value::String(std::move(out));
    }
    size_t start = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
      const size_t at = t.find(old, start);
      if (at == std::string::npos) break;
      out.Append(s.Sub(start, at));
      out.Append(replacement);
      FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
      start = at + old.size();
      ++done;
    }
    out.Append(s.Sub(start, t.size()));
    FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
    return Value::String(std::move(out));
  }

  // ---- filters -----------------------------------------------------------

  absl::StatusOr<Value> Attribute(const Value& item, const std::string& path) {
    Value v = item;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
      if (v.undefined()) return v;
      bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), IsDigit);
      if (numeric && v.kind == Value::Kind::kList) {
        FJORD_ASSIGN_OR_RETURN(v, GetItem(v, Value::Int(std::stoll(part.substr(0, 18)))));
      } else {
        FJORD_ASSIGN_OR_RETURN(v, GetItem(v, Value::Plain(part)));
      }
      if (dot == std::string::npos) return v;
      start = dot + 1;
    }
  }

  absl::StatusOr<Value> Filter(const std::string& name, const Value& in, const Args& args) {
    auto kw_bool = [&](size_t k, absl::string_view kw, bool def) {
      const Value* v = args.Get(k, kw);
      return v == nullptr ? def : Truthy(*v);
    };
    if (name == "safe") return in;
    if (name == "default" || name == "d") {
      const Value* def = args.Get(0, "default_value");
      const bool boolean = kw_bool(1, "boolean", false);
      if (in.undefined() || (boolean && !Truthy(in)))
        return def != nullptr ? *def : Value::Plain("");
      return in;
    }
    if (name == "length" || name == "count") {
      switch (in.kind) {
        case Value::Kind::kUndefined:
          return Value::Int(0);
        case Value::Kind::kString:
          return Value::Int(static_cast<int64_t>(CodePointCount(in.text())));
        case Value::Kind::kList:
          return Value::Int(static_cast<int64_t>(in.list->size()));
        case Value::Kind::kDict:
        case Value::Kind::kNamespace:
          return Value::Int(static_cast<int64_t>(in.dict->items.size()));
        default:
          return Fail(absl::StrCat("object of type '", TypeName(in), "' has no len()"));
      }
    }
    if (name == "tojson") {
      JsonStyle style;
      const Value* indent = args.Get(0, "indent");
      if (indent != nullptr && indent->is_integer()) {
        style.indent = std::max<int64_t>(0, std::min<int64_t>(indent->AsInt(), 1000));
        style.item_sep = ",";
      } else if (indent != nullptr && indent->kind != Value::Kind::kNone) {
        return Fail("tojson: indent must be an integer or none");
      }
      style.ensure_ascii = kw_bool(99, "ensure_ascii", false);
      style.sort_keys = kw_bool(99, "sort_keys", false);
      if (const Value* sep = args.Get(99, "separators");
          sep != nullptr && sep->kind == Value::Kind::kList && sep->list->size() == 2 &&
          (*sep->list)[0].kind == Value::Kind::kString &&
          (*sep->list)[1].kind == Value::Kind::kString) {
        style.item_sep = (*sep->list)[0].text();
        style.key_sep = (*sep->list)[1].text();
      }
      if (in.undefined()) return Fail(in.text());
      std::string out;
      absl::Status status = JsonDump(in, style, 0, options_.max_output_bytes, &out);
      if (!status.ok()) {
        if (absl::IsResourceExhausted(status)) return CheckSize(out.size());
        return Fail(status.message());
      }
      FJORD_RETURN_IF_ERROR(CheckSize(out.size()));
      int64_t origin = in.origin;
      if (origin < 0 && in.kind == Value::Kind::kString) origin = in.s->SoleOrigin();
      return Value::String(Tagged(std::move(out), origin));
    }
    if (name == "string") {
      if (in.kind == Value::Kind::kString) return in;
      return Value::String(ToStr(in));
    }
    if (name == "trim") {
      const Value* chars = args.Get(0, "chars");
      const Str s = ToStr(in);
      return Value::String(StripStr(
          s, chars != nullptr && chars->kind == Value::Kind::kString ? &chars->text() : nullptr,
          true, true));
    }
    if (name == "upper") return Value::Plain(AsciiUpper(ToStr(in).text));
    if (name == "lower") return Value::Plain(AsciiLower(ToStr(in).text));
    if (name == "title") return Value::Plain(TitleFilter(ToStr(in).text));
    if (name == "capitalize") return Value::Plain(Capitalize(ToStr(in).text));
    if (name == "escape" || name == "e") {
      const Str s = ToStr(in);
      std::string out;
      for (char c : s.text) {
        switch (c) {
          case '&':
            out += "&amp;";
            break;
          case '<':
            out += "&lt;";
            break;
          case '>':
            out += "&gt;";
            break;
          case '"':
            out += "&#34;";
            break;
          case '\'':
            out += "&#39;";
            break;
          default:
            out.push_back(c);
        }
      }
      return Value::String(Tagged(std::move(out), s.SoleOrigin()));
    }
    if (name == "replace") {
      const Value* old_v = args.Get(0, "old");
      const Value* new_v = args.Get(1, "new");
      const Value* count = args.Get(2, "count");
      if (old_v == nullptr || new_v == nullptr) return Fail("replace takes two arguments");
      return Replace(ToStr(in), ToStr(*old_v).text, ToStr(*new_v),
                     count != nullptr && count->is_integer() ? count->AsInt() : -1);
    }
    if (name == "indent") {
      const Value* width_v = args.Get(0, "width");
      std::string pad = "    ";
      if (width_v != nullptr && width_v->kind == Value::Kind::kString) pad = width_v->text();
      if (width_v != nullptr && width_v->is_integer()) {
        pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width_v->AsInt(), 0, 1000)), ' ');
      }
      const bool first = kw_bool(1, "first", false);
      const bool blank = kw_bool(2, "blank", false);
      const Str s = ToStr(in);
      Str out;
      if (first) out.Append(pad);
      size_t start = 0;
      bool first_line = true;
      const std::string& t = s.text;
      while (start <= t.size()) {
        size_t nl = t.find('\n', start);
        const bool last = nl == std::string::npos;
        if (last) nl = t.size();
        if (last && start == t.size() && !first_line) break;
        if (!first_line) {
          out.Append("\n");
          if (blank || nl > start) out.Append(pad);
        }
        out.Append(s.Sub(start, nl));
        FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
        first_line = false;
        start = nl + 1;
        if (last) break;
      }
      return Value::String(std::move(out));
    }
    if ((name == "int" || name == "float") && in.undefined()) return Fail(in.text());
    if (name == "int" || name == "float") {
      const Value* def = args.Get(0, "default");
      Value fallback = def != nullptr ? *def : (name == "int" ? Value::Int(0) : Value::Float(0));
      if (in.is_number()) {
        if (name == "int") {
          if (in.kind != Value::Kind::kFloat) return Value::Int(in.AsInt());
          if (!std::isfinite(in.f) || std::fabs(in.f) > 9e18) return fallback;
          return Value::Int(static_cast<int64_t>(in.f));
        }
        return Value::Float(in.AsFloat());
      }
      if (in.kind == Value::Kind::kString) {
        const std::string t(StripStr(*in.s, nullptr, true, true).text);
        int64_t iv = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), iv);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size() && !t.empty()) {
          return name == "int" ? Value::Int(iv) : Value::Float(static_cast<double>(iv));
        }
        char* end = nullptr;
        const double dv = std::strtod(t.c_str(), &end);
        if (!t.empty() && end == t.c_str() + t.size()) {
          if (name == "float") return Value::Float(dv);
          if (std::isfinite(dv) && std::fabs(dv) < 9e18)
            return Value::Int(static_cast<int64_t>(dv));
        }
      }
      return fallback;
    }
    if (name == "abs") {
      if (!in.is_number())
        return Fail(absl::StrCat("bad operand type for abs(): '", TypeName(in), "'"));
      if (in.kind == Value::Kind::kFloat) return Value::Float(std::fabs(in.f));
      if (in.AsInt() == INT64_MIN) return Fail("integer overflow");
      return Value::Int(std::abs(in.AsInt()));
    }
    if (name == "items") {
      if (in.undefined()) return Value::MakeList({});
      if (in.kind != Value::Kind::kDict) return Fail("items: expected a mapping");
      List items;
      for (const auto& [k, v] : in.dict->items)
        items.push_back(Value::MakeTuple({KeyValue(k, in.origin), v}));
      return Value::MakeList(std::move(items));
    }
    if (name == "dictsort") {
      if (in.kind != Value::Kind::kDict) return Fail("dictsort: expected a mapping");
      const bool case_sensitive = kw_bool(0, "case_sensitive", false);
      const Value* by = args.Get(1, "by");
      const bool by_value =
          by != nullptr && by->kind == Value::Kind::kString && by->text() == "value";
      const bool reverse = kw_bool(2, "reverse", false);
      List items;
      for (const auto& [k, v] : in.dict->items)
        items.push_back(Value::MakeTuple({KeyValue(k, in.origin), v}));
      FJORD_RETURN_IF_ERROR(SortValues(items, case_sensitive, reverse, [&](const Value& item) {
        return (*item.list)[by_value ? 1 : 0];
      }));
      return Value::MakeList(std::move(items));
    }
    if (name == "sort") {
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      const bool reverse = kw_bool(0, "reverse", false);
      const bool case_sensitive = kw_bool(1, "case_sensitive", false);
      const Value* attribute = args.Get(2, "attribute");
      std::vector<Value> keys;
      absl::Status status;
      FJORD_RETURN_IF_ERROR(SortValues(items, case_sensitive, reverse, [&](const Value& item) {
        if (attribute == nullptr || attribute->kind != Value::Kind::kString) return item;
        absl::StatusOr<Value> v = Attribute(item, attribute->text());
        return v.ok() ? *v : Value();
      }));
      return Value::MakeList(std::move(items));
    }
    if (name == "list") {
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      return Value::MakeList(std::move(items));
    }
    if (name == "reverse") {
      if (in.kind == Value::Kind::kString) {
        const std::vector<size_t> offsets = CodePointOffsets(in.text());
        Str out;
        for (size_t k = offsets.size() - 1; k > 0; --k)
          out.Append(in.s->Sub(offsets[k - 1], offsets[k]));
        return Value::String(std::move(out));
      }
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      std::reverse(items.begin(), items.end());
      return Value::MakeList(std::move(items));
    }
    if (name == "unique") {
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      // Strings compare ignoring case unless case_sensitive (jinja2).
      const bool case_sensitive = kw_bool(0, "case_sensitive", false);
      auto key = [&](const Value& v) {
        if (case_sensitive || v.kind != Value::Kind::kString) return v;
        return Value::Plain(AsciiLower(v.text()));
      };
      List out, keys;
      for (const Value& item : items) {
        FJORD_RETURN_IF_ERROR(CountStep());
        const Value k = key(item);
        bool seen = false;
        for (const Value& o : keys) seen = seen || Equals(o, k);
        if (!seen) {
          out.push_back(item);
          keys.push_back(k);
        }
      }
      return Value::MakeList(std::move(out));
    }
    if (name == "first" || name == "last") {
      if (in.kind == Value::Kind::kList) {
        if (in.list->empty()) return Value::Undefined("No first item, sequence was empty.");
        return name == "first" ? in.list->front() : in.list->back();
      }
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const Value* sep_v = args.Get(0, "d");
      const Value* attribute = args.Get(1, "attribute");
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      const Str sep = sep_v != nullptr ? ToStr(*sep_v) : Str();
      Str out;
      for (size_t k = 0; k < items.size(); ++k) {
        Value item = items[k];
        if (attribute != nullptr && attribute->kind == Value::Kind::kString) {
          FJORD_ASSIGN_OR_RETURN(item, Attribute(item, attribute->text()));
        }
        if (k > 0) out.Append(sep);
        out.Append(ToStr(item));
        FJORD_RETURN_IF_ERROR(CheckSize(out.text.size()));
      }
      return Value::String(std::move(out));
    }
    if (name == "map") {
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      List out;
      const Value* attribute = args.Get(99, "attribute");
      for (const Value& item : items) {
        if (attribute != nullptr) {
          FJORD_ASSIGN_OR_RETURN(Value v, Attribute(item, ToStr(*attribute).text));
          if (v.undefined()) {
            if (const Value* def = args.Get(99, "default")) v = *def;
          }
          out.push_back(std::move(v));
          continue;
        }
        if (args.positional.empty() || args.positional[0].kind != Value::Kind::kString) {
          return Fail("map: expected a filter name or attribute=");
        }
        const std::string& filter = args.positional[0].text();
        if (KnownFilters().count(filter) == 0 || filter == "map") {
          return Fail(absl::StrCat("no filter named '", filter, "'"));
        }
        Args rest;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        rest.keyword = args.keyword;
        FJORD_ASSIGN_OR_RETURN(Value v, Filter(filter, item, rest));
        out.push_back(std::move(v));
      }
      return Value::MakeList(std::move(out));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool attr = name == "selectattr" || name == "rejectattr";
      const bool keep_if = name == "select" || name == "selectattr";
      FJORD_ASSIGN_OR_RETURN(List items, Iterate(in));
      size_t next = 0;
      const Value* attribute = nullptr;
      if (attr) {
        if (args.positional.empty() || args.positional[0].kind != Value::Kind::kString) {
          return Fail(name + ": expected an attribute name");
        }
        attribute = &args.positional[0];
        next = 1;
      }
      std::string test;
      if (next < args.positional.size()) {
        test = ToStr(args.positional[next]).text;
        if (KnownTests().count(test) == 0) return Fail(absl::StrCat("no test named '", test, "'"));
      }
      Args test_args;
      if (next + 1 < args.positional.size()) {
        test_args.positional.assign(args.positional.begin() + next + 1, args.positional.end());
      }
      List out;
      for (const Value& item : items) {
        Value v = item;
        if (attribute != nullptr) {
          FJORD_ASSIGN_OR_RETURN(v, Attribute(item, attribute->text()));
        }
        bool holds;
        if (test.empty()) {
          holds = Truthy(v);
        } else {
          FJORD_ASSIGN_OR_RETURN(holds, Test(test, v, test_args));
        }
        if (holds == keep_if) out.push_back(item);
      }
      return Value::MakeList(std::move(out));
    }
    return Fail(absl::StrCat("no filter named '", name, "'"));
  }

  absl::Status SortValues(List& items, bool case_sensitive, bool reverse,
                          const std::function<Value(const Value&)>& key_of) {
    std::vector<std::pair<Value, size_t>> keyed;
    for (size_t k = 0; k < items.size(); ++k) {
      Value key = key_of(items[k]);
      if (!case_sensitive && key.kind == Value::Kind::kString)
        key = Value::Plain(AsciiLower(key.text()));
      keyed.emplace_back(std::move(key), k);
    }
    absl::Status status;
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
      if (!status.ok()) return false;
      absl::StatusOr<int> c = Compare(a.first, b.first, "<");
      if (!c.ok()) {
        status = Fail(c.status().message());
        return false;
      }
      return reverse ? *c > 0 : *c < 0;
    });
    FJORD_RETURN_IF_ERROR(status);
    List sorted;
    for (const auto& [key, k] : keyed) sorted.push_back(items[k]);
    items = std::move(sorted);
    return absl::OkStatus();
  }

  // ---- tests -------------------------------------------------------------

  absl::StatusOr<bool> Test(const std::string& name, const Value& v, const Args& args) {
    const Value* arg = args.Get(0, "value");
    auto need_arg = [&]() -> absl::Status {
      if (arg == nullptr) return Fail(absl::StrCat("the test '", name, "' needs an argument"));
      return absl::OkStatus();
    };
    if (name == "defined") return !v.undefined();
    if (name == "undefined") return v.undefined();
    if (name == "none") return v.kind == Value::Kind::kNone;
    if (name == "string") return v.kind == Value::Kind::kString;
    if (name == "mapping") return v.kind == Value::Kind::kDict;
    if (name == "number") return v.is_number();
    if (name == "integer") return v.kind == Value::Kind::kInt;
    if (name == "float") return v.kind == Value::Kind::kFloat;
    if (name == "boolean") return v.kind == Value::Kind::kBool;
    if (name == "true") return v.kind == Value::Kind::kBool && v.b;
    if (name == "false") return v.kind == Value::Kind::kBool && !v.b;
    if (name == "callable") return v.kind == Value::Kind::kMacro || v.kind == Value::Kind::kBuiltin;
    if (name == "iterable") {
      return v.kind == Value::Kind::kString || v.kind == Value::Kind::kList ||
             v.kind == Value::Kind::kDict || v.undefined();
    }
    if (name == "sequence") {
      return v.kind == Value::Kind::kString || v.kind == Value::Kind::kList ||
             v.kind == Value::Kind::kDict || v.undefined();
    }
    if (name == "lower" || name == "upper") {
      if (v.kind != Value::Kind::kString) return false;
      const std::string& t = v.text();
      bool cased = false;
      for (char c : t) {
        if (!IsAsciiAlpha(c)) continue;
        cased = true;
        if ((name == "lower") != (c >= 'a' && c <= 'z')) return false;
      }
      return cased;
    }
    if (name == "odd" || name == "even" || name == "divisibleby") {
      // jinja2: value % 2 == 1, value % 2 == 0, value % num == 0 (Python's %).
      Value divisor = Value::Int(2);
      if (name == "divisibleby") {
        FJORD_RETURN_IF_ERROR(need_arg());
        divisor = *arg;
      }
      if (!v.is_number() || !divisor.is_number()) {
        return Fail(absl::StrCat("the test '", name, "' needs numbers"));
      }
      FJORD_ASSIGN_OR_RETURN(Value rest, Binary("%", v, divisor));
      return Equals(rest, Value::Int(name == "odd" ? 1 : 0));
    }
    if (name == "sameas") {
      FJORD_RETURN_IF_ERROR(need_arg());
      if (v.kind != arg->kind) return false;
      if (v.kind == Value::Kind::kNone || v.kind == Value::Kind::kUndefined) return true;
      if (v.kind == Value::Kind::kBool) return v.b == arg->b;
      if (v.kind == Value::Kind::kList) return v.list == arg->list;
      if (v.kind == Value::Kind::kDict || v.kind == Value::Kind::kNamespace)
        return v.dict == arg->dict;
      return Equals(v, *arg);
    }
    if (name == "in") {
      FJORD_RETURN_IF_ERROR(need_arg());
      return Contains(*arg, v);
    }
    static const std::map<std::string, std::string> kOps = {
        {"eq", "=="}, {"equalto", "=="},    {"==", "=="}, {"ne", "!="}, {"!=", "!="},
        {"lt", "<"},  {"lessthan", "<"},    {"<", "<"},   {"le", "<="}, {"<=", "<="},
        {"gt", ">"},  {"greaterthan", ">"}, {">", ">"},   {"ge", ">="}, {">=", ">="}};
    auto op = kOps.find(name);
    if (op != kOps.end()) {
      FJORD_RETURN_IF_ERROR(need_arg());
      return CompareOp(op->second, v, *arg);
    }
    return Fail(absl::StrCat("no test named '", name, "'"));
  }

  const JinjaOptions& options_;
  int64_t max_list_;
  int max_nesting_;
  std::vector<std::shared_ptr<Dict>> frames_;
  Str out_;
  Str* sink_ = nullptr;
  std::vector<std::pair<size_t, size_t>> generation_;
  int64_t steps_ = 0;
  int64_t allocated_ = 0;
  int nesting_ = 0;
  int line_ = 0;
};

}  // namespace jinja_internal

using jinja_internal::Node;

absl::StatusOr<JinjaTemplate> JinjaTemplate::Parse(absl::string_view source, JinjaOptions options) {
  // As jinja2: newlines normalised to "\n", one trailing newline dropped.
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized.push_back(source[i]);
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  const jinja_internal::SourceMap map(normalized);
  jinja_internal::Lexer lexer(normalized, map);
  FJORD_ASSIGN_OR_RETURN(std::vector<jinja_internal::Token> tokens, lexer.Run());
  jinja_internal::Parser parser(std::move(tokens), map, options.max_depth);
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<Node> root, parser.ParseTemplate());
  return JinjaTemplate(std::shared_ptr<const Node>(std::move(root)), options,
                       parser.has_generation_);
}

absl::StatusOr<JinjaOutput> JinjaTemplate::RenderWithOrigins(
    const nlohmann::ordered_json& context) const {
  jinja_internal::Renderer renderer(options_);
  FJORD_RETURN_IF_ERROR(renderer.Run(*root_, context));
  JinjaOutput out;
  out.text = std::move(renderer.out().text);
  for (const jinja_internal::Span& span : renderer.out().spans) {
    out.origins.push_back(OriginSpan{span.begin, span.end, span.origin});
  }
  out.generation = std::move(renderer.generation());
  return out;
}

absl::StatusOr<std::string> JinjaTemplate::Render(const nlohmann::ordered_json& context) const {
  FJORD_ASSIGN_OR_RETURN(JinjaOutput out, RenderWithOrigins(context));
  return std::move(out.text);
}

}  // namespace fjord::data
