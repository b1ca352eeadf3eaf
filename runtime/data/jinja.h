// A small Jinja interpreter for Hugging Face chat templates.
//
// It renders what real chat templates use, the way transformers renders them:
// jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
// with the loopcontrols extension, the globals raise_exception(msg),
// namespace(...), range(...), dict(...), and transformers' `tojson` filter
// (json.dumps(x, ensure_ascii=False, indent=None, sort_keys=False)).
//
// Supported:
//   {{ expr }}, {% stmt %}, {# comment #}; whitespace control {%- -%} {{- -}}
//   and {%+ +%}; trim_blocks and lstrip_blocks always on (as transformers).
//   Statements: if/elif/else, for (tuple targets, `if` filter, `else`,
//   loop.index0/index/revindex/revindex0/first/last/length/previtem/nextitem),
//   break/continue, set (names, `ns.attr = ...`, `{% set x %}...{% endset %}`),
//   macro (positional and keyword arguments with defaults), generation
//   (transformers' marker: renders its body).
//   Expressions: literals (strings with Python escapes, ints, floats,
//   true/false/none and the capitalised spellings, lists, tuples, dicts),
//   and/or/not, in/not in, is/is not tests, == != < > <= >=, + - * / // % **,
//   ~, `a if c else b`, attribute and subscript access, slices with steps,
//   calls, filters.
//   Filters: abs capitalize count d default dictsort e escape first float
//   indent int items join last length list lower map reject rejectattr replace
//   reverse safe select selectattr sort string title tojson trim unique upper.
//   Tests: boolean callable defined divisibleby eq equalto even false float ge
//   gt in integer iterable le lower lt mapping ne none number odd sameas
//   sequence string true undefined upper (and ==, !=, <, ... spellings).
//   Methods: str.strip/lstrip/rstrip/split/rsplit/startswith/endswith/replace/
//   upper/lower/title/capitalize/find/count/join, dict.get/items/keys/values.
// Not supported (a syntax or runtime error names them): include, import,
// extends, block, raw, call blocks, filter blocks, recursive loops and
// str.format; the `%` string operator knows %s %r %d %i %% only. As jinja2
// does by default, "\r\n" and "\r" in the source read as "\n" and one
// trailing newline is dropped.
//
// Semantics follow jinja2's default Undefined: a missing variable, key or
// attribute is undefined; it prints as "", is falsy, iterates as empty and has
// length 0; attribute access, subscripting, arithmetic or tojson on it is an
// error ("'foo' is undefined"), as in jinja2. String lengths, indices and
// slices count Unicode code points, as Python does; upper/lower/title/
// capitalize change ASCII letters only.
//
// Errors (absl::Status, never exceptions):
//   - Parse: InvalidArgument "line L, column C: ..." for syntax errors (also
//     unknown filters and tests, which jinja2 finds at compile time).
//   - Render: InvalidArgument "line L: ..." for type errors and undefined
//     values used where jinja2 errors; a template's raise_exception(msg) gives
//     InvalidArgument "line L: raise_exception: <msg>" (the message verbatim);
//     ResourceExhausted when the render exceeds JinjaOptions' budgets (steps,
//     nesting depth, output and value size), so a hostile template cannot
//     hang or exhaust memory.
//
// Provenance: RenderWithOrigins tags every string that comes from the
// context's `messages[i]` (any field at any depth, except the message's own
// `role` and `name`, which templates render as headers) with origin i. Tags follow
// the bytes through concatenation (~, +, join), slicing, indexing,
// strip/trim/lstrip/rstrip, split, replace (the replaced text is untagged) and
// string conversion of numbers, lists and dicts from the message (tagged as a
// whole); tojson of a value from message i is tagged i as a whole. Text that
// the template builds itself (literals, upper/lower of anything, format-like
// transformations) is untagged.
//
// Thread-safety: a parsed JinjaTemplate is immutable; Render may be called
// concurrently.
#ifndef FJORD_RUNTIME_DATA_JINJA_H_
#define FJORD_RUNTIME_DATA_JINJA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace fjord::data {

struct JinjaOptions {
  // Default 10,000,000: evaluation steps (expressions, statements, loop
  // iterations) one render may take.
  int64_t max_steps = 10'000'000;
  // Default 200: nesting of expressions and statements at parse time, and of
  // macro calls at render time.
  int max_depth = 200;
  // Default 64 MiB: the most bytes the output, or any one string or list
  // value, may hold.
  int64_t max_output_bytes = int64_t{64} << 20;
};

// A byte range [begin, end) of rendered text that came from messages[message].
struct OriginSpan {
  size_t begin = 0;
  size_t end = 0;
  int64_t message = 0;
};

struct JinjaOutput {
  std::string text;
  // Sorted, non-overlapping; adjacent ranges of one message are merged.
  std::vector<OriginSpan> origins;
  // What each {% generation %} block rendered, as byte ranges [first,
  // second) of text, in order (transformers' assistant-token markers). Blocks
  // rendered inside a macro or a {% set %} block are not recorded.
  std::vector<std::pair<size_t, size_t>> generation;
};

namespace jinja_internal {
struct Node;
}

class JinjaTemplate {
 public:
  // Parses `source`. InvalidArgument "line L, column C: ..." on syntax errors.
  static absl::StatusOr<JinjaTemplate> Parse(absl::string_view source,
                                             JinjaOptions options = JinjaOptions());

  // Renders with `context` as the template's variables (keys keep their
  // order, as Python dicts do: tojson and dict iteration see that order).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;

  // Render, plus which output bytes came from which message (see the file
  // comment).
  absl::StatusOr<JinjaOutput> RenderWithOrigins(const nlohmann::ordered_json& context) const;

  // Whether the template has a {% generation %} block.
  bool has_generation() const { return has_generation_; }

 private:
  JinjaTemplate(std::shared_ptr<const jinja_internal::Node> root, JinjaOptions options,
                bool has_generation)
      : root_(std::move(root)), options_(options), has_generation_(has_generation) {}

  std::shared_ptr<const jinja_internal::Node> root_;
  JinjaOptions options_;
  bool has_generation_ = false;
};

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_JINJA_H_
