// Private to //runtime/data:jinja. The values a Jinja template computes with:
// a small model of Python's (None, bool, int, float, str, list/tuple, dict,
// jinja2's Undefined and Namespace, macros and builtins), strings tagged with
// the message they came from (Str), and Python's str(), repr() and
// json.dumps() of them.
#ifndef FJORD_RUNTIME_DATA_JINJA_VALUE_H_
#define FJORD_RUNTIME_DATA_JINJA_VALUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::data::jinja_internal {

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

inline Str Tagged(std::string text, int64_t origin) {
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

// Python's type name of v ("str", "NoneType", ...), for error messages.
const char* TypeName(const Value& v);
// Python's truthiness (Undefined is false).
bool Truthy(const Value& v);

// UTF-8: whether c continues a code point; each code point's start offset
// plus text.size(); the number of code points; the code point at pos (an
// invalid byte decodes as itself, *len = 1); cp appended as UTF-8.
bool IsContinuation(char c);
std::vector<size_t> CodePointOffsets(absl::string_view text);
size_t CodePointCount(absl::string_view text);
uint32_t DecodeAt(absl::string_view text, size_t pos, size_t* len);
void EncodeUtf8(uint32_t cp, std::string* out);

// Python's str.isspace() for one code point; ASCII whitespace, digits and
// letters for one byte.
bool IsPySpace(uint32_t cp);
bool IsSpace(char c);
bool IsDigit(char c);
bool IsAsciiAlpha(char c);

// Python's str.strip/lstrip/rstrip (`chars` null: whitespace), keeping tags.
Str StripStr(const Str& s, const std::string* chars, bool left, bool right);
// ASCII-only upper() and lower().
std::string AsciiUpper(std::string s);
std::string AsciiLower(std::string s);

// Python's repr(float), repr(str), str(v) (tagged with v's origin) and repr(v).
std::string FloatRepr(double f);
std::string StringRepr(absl::string_view s);
Str ToStr(const Value& v);
std::string Repr(const Value& v);

// json.dumps's options as transformers' tojson filter passes them.
struct JsonStyle {
  int64_t indent = -1;  // -1: none (one line)
  bool sort_keys = false;
  bool ensure_ascii = false;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
};
// Python's json.dumps(v, ...) appended to out. InvalidArgument for values
// JSON cannot hold; ResourceExhausted past max_bytes.
absl::Status JsonDump(const Value& v, const JsonStyle& style, int level, int64_t max_bytes,
                      std::string* out);

// Python's == (deep), and the order of a and b (<0, 0, >0) where Python has
// one; InvalidArgument where Python raises (`op` names the operator).
bool Equals(const Value& a, const Value& b);
absl::StatusOr<int> Compare(const Value& a, const Value& b, absl::string_view op);

}  // namespace fjord::data::jinja_internal

#endif  // FJORD_RUNTIME_DATA_JINJA_VALUE_H_
