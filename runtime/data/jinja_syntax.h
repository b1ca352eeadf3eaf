// Private to //runtime/data:jinja. A template's syntax tree, and the lexer and
// parser that build it (jinja2's whitespace rules as transformers sets them:
// trim_blocks, lstrip_blocks, "-" and "+" modifiers).
#ifndef FJORD_RUNTIME_DATA_JINJA_SYNTAX_H_
#define FJORD_RUNTIME_DATA_JINJA_SYNTAX_H_

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/jinja_value.h"

namespace fjord::data::jinja_internal {

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

// The filters and tests the renderer knows (unknown ones are parse errors).
const std::set<std::string>& KnownFilters();
const std::set<std::string>& KnownTests();

struct ParsedSource {
  NodePtr root;  // a kBlock whose bodies[0] is the template
  bool has_generation = false;
};
// Parses `source` (newlines already normalised). InvalidArgument "line L,
// column C: ..." on syntax errors; max_depth bounds the nesting.
absl::StatusOr<ParsedSource> ParseSource(absl::string_view source, int max_depth);

}  // namespace fjord::data::jinja_internal

#endif  // FJORD_RUNTIME_DATA_JINJA_SYNTAX_H_
