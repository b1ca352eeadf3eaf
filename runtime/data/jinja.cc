// The Jinja interpreter of jinja.h: jinja_syntax.h parses the template into a
// Node tree; here a tree-walking renderer evaluates it over Value
// (jinja_value.h), a small model of the Python values a chat template sees.
// Strings carry origin tags (Str) for RenderWithOrigins.
#include "runtime/data/jinja.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/data/jinja_syntax.h"
#include "runtime/data/jinja_value.h"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace jinja_internal {

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
    // A macro call costs about seven C++ frames per level (more under
    // AddressSanitizer): recursion is bounded on its own, well inside the
    // stack, before the general nesting budget would be reached.
    if (macro_depth_ >= kMaxMacroDepth) {
      return absl::ResourceExhaustedError(
          absl::StrCat("line ", line_, ": macro calls nested deeper than ", kMaxMacroDepth));
    }
    ++macro_depth_;
    struct Leave {
      int* depth;
      ~Leave() { --*depth; }
    } leave{&macro_depth_};
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
        style.item_sep.assign(1, ',');  // (not = ",": GCC 12 -Wrestrict false positive)
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
  static constexpr int kMaxMacroDepth = 100;
  int macro_depth_ = 0;
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
  FJORD_ASSIGN_OR_RETURN(jinja_internal::ParsedSource parsed,
                         jinja_internal::ParseSource(normalized, options.max_depth));
  return JinjaTemplate(std::shared_ptr<const Node>(std::move(parsed.root)), options,
                       parsed.has_generation);
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
