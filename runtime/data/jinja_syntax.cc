#include "runtime/data/jinja_syntax.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::data::jinja_internal {

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

bool IsNameStart(char c) { return IsAsciiAlpha(c) || c == '_'; }

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

absl::StatusOr<ParsedSource> ParseSource(absl::string_view source, int max_depth) {
  const SourceMap map(source);
  Lexer lexer(source, map);
  FJORD_ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.Run());
  Parser parser(std::move(tokens), map, max_depth);
  ParsedSource parsed;
  FJORD_ASSIGN_OR_RETURN(parsed.root, parser.ParseTemplate());
  parsed.has_generation = parser.has_generation_;
  return parsed;
}

}  // namespace fjord::data::jinja_internal
