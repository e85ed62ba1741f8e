#include "engine/chat/interpreter.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/errors.h"
#include "engine/chat/filters.h"
#include "engine/chat/jinja_tests.h"
#include "engine/chat/loop_context.h"
#include "engine/chat/operators.h"

namespace dserve::engine::jinja {
namespace {

// Variables assigned in one jinja2 frame; reads fall through to the enclosing frames.
class Scope {
 public:
  explicit Scope(const Scope* parent) : parent_(parent) {}

  const Value* Find(std::string_view name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent_) {
      if (const Value* v = s->vars_.Find(name)) return v;
    }
    return nullptr;
  }
  void Set(std::string name, Value value) { vars_.Set(std::move(name), std::move(value)); }
  // Binds the names jinja2 starts undefined in this frame (see scoping.h).
  void BindUndefined(const std::vector<std::string>& names) {
    for (const std::string& name : names) {
      vars_.Set(name, Value::Undefined(absl::StrCat("'", name, "' is undefined")));
    }
  }

 private:
  const Scope* parent_;
  Dict vars_;
};

enum class Flow { kNormal, kBreak, kContinue };

class Interpreter {
 public:
  Interpreter(const Dict& variables, const Clock& clock) : variables_(variables), clock_(clock) {}

  absl::StatusOr<Flow> ExecBody(const Body& body, Scope& scope, std::string* out) {
    for (const StmtPtr& s : body) {
      absl::StatusOr<Flow> flow = Exec(*s, scope, out);
      if (!flow.ok()) return AtLine(flow.status(), s->line);
      if (*flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

 private:
  absl::StatusOr<Flow> Exec(const Stmt& s, Scope& scope, std::string* out) {
    switch (s.kind) {
      case StmtKind::kText:
        out->append(s.text);
        return Flow::kNormal;
      case StmtKind::kOutput: {
        folding_ = IsConstant(*s.expr);
        absl::StatusOr<Value> value = Eval(*s.expr, scope);
        folding_ = false;
        DSERVE_ASSIGN_OR_RETURN(Value v, std::move(value));
        DSERVE_ASSIGN_OR_RETURN(std::string text, ToStr(v));
        out->append(text);
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (const auto& [test, body] : s.branches) {
          DSERVE_ASSIGN_OR_RETURN(Value t, Eval(*test, scope));
          if (Truthy(t)) return ExecBody(body, scope, out);
        }
        return ExecBody(s.else_body, scope, out);
      case StmtKind::kFor:
        return ExecFor(s, scope, out);
      case StmtKind::kSet: {
        DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
        DSERVE_RETURN_IF_ERROR(Assign(s.target, std::move(v), scope));
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock: {
        std::string captured;
        Scope block_scope(&scope);
        block_scope.BindUndefined(s.undefined_at_entry);
        DSERVE_ASSIGN_OR_RETURN(Flow flow, ExecBody(s.body, block_scope, &captured));
        // A break or continue inside the block leaves before the assignment, as in jinja2.
        if (flow != Flow::kNormal) return flow;
        Value v = Value::String(std::move(captured));
        if (s.expr) {
          const Value* saved = block_input_;
          block_input_ = &v;
          absl::StatusOr<Value> filtered = Eval(*s.expr, scope);
          block_input_ = saved;
          if (!filtered.ok()) return filtered.status();
          v = *std::move(filtered);
        }
        DSERVE_RETURN_IF_ERROR(Assign(s.target, std::move(v), scope));
        return Flow::kNormal;
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kGeneration: {
        // Hugging Face renders the body through a macro call: its own scope.
        Scope body_scope(&scope);
        body_scope.BindUndefined(s.undefined_at_entry);
        return ExecBody(s.body, body_scope, out);
      }
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecFor(const Stmt& s, Scope& scope, std::string* out) {
    DSERVE_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr, scope));
    DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
    if (s.loop_filter) {
      std::vector<Value> kept;
      for (Value& item : items) {
        Scope filter_scope(&scope);
        DSERVE_RETURN_IF_ERROR(Assign(s.target, item, filter_scope));
        DSERVE_ASSIGN_OR_RETURN(Value keep, Eval(*s.loop_filter, filter_scope));
        if (Truthy(keep)) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      // jinja2 runs a for loop's else block when there was no iteration at all; a break or
      // continue there belongs to an enclosing loop.
      Scope else_scope(&scope);
      else_scope.BindUndefined(s.else_undefined_at_entry);
      return ExecBody(s.else_body, else_scope, out);
    }
    auto loop = std::make_shared<LoopContext>(std::move(items));
    const Value loop_value = Value::FromObject(loop);
    for (size_t i = 0; i < loop->items().size(); ++i) {
      loop->SetIndex(i);
      // A fresh scope per iteration: assignments never carry over to the next one.
      Scope iteration(&scope);
      iteration.BindUndefined(s.undefined_at_entry);
      DSERVE_RETURN_IF_ERROR(Assign(s.target, loop->items()[i], iteration));
      iteration.Set("loop", loop_value);
      DSERVE_ASSIGN_OR_RETURN(Flow flow, ExecBody(s.body, iteration, out));
      if (flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  absl::Status Assign(const AssignTarget& target, Value v, Scope& scope) {
    if (!target.ns_attr.empty()) {
      const Value* ns = Lookup(target.names[0], scope);
      Namespace* obj = ns != nullptr && ns->kind() == Value::Kind::kObject
                           ? dynamic_cast<Namespace*>(&ns->object())
                           : nullptr;
      if (obj == nullptr) {
        return PyError("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
      }
      obj->SetAttr(target.ns_attr, std::move(v));
      return absl::OkStatus();
    }
    if (!target.is_tuple) {
      scope.Set(target.names[0], std::move(v));
      return absl::OkStatus();
    }
    if (!v.is_string() && v.kind() != Value::Kind::kSeq && v.kind() != Value::Kind::kDict &&
        v.kind() != Value::Kind::kGenerator && !v.is_undefined()) {
      return TypeError(absl::StrCat("cannot unpack non-iterable ", TypeName(v), " object"));
    }
    DSERVE_ASSIGN_OR_RETURN(std::vector<Value> parts, Iterate(v));
    const size_t want = target.names.size();
    if (parts.size() > want) {
      return ValueError(absl::StrCat("too many values to unpack (expected ", want, ")"));
    }
    if (parts.size() < want) {
      return ValueError(absl::StrCat("not enough values to unpack (expected ", want, ", got ",
                                     parts.size(), ")"));
    }
    for (size_t i = 0; i < want; ++i) scope.Set(target.names[i], std::move(parts[i]));
    return absl::OkStatus();
  }

  // A name in the scopes, then the render variables; globals are looked up by Eval.
  const Value* Lookup(std::string_view name, const Scope& scope) const {
    if (const Value* v = scope.Find(name)) return v;
    return variables_.Find(name);
  }

  absl::StatusOr<Value> Eval(const Expr& e, Scope& scope) {
    absl::StatusOr<Value> v = EvalImpl(e, scope);
    if (!v.ok()) return AtLine(v.status(), e.line);
    return v;
  }

  absl::StatusOr<Value> EvalImpl(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case ExprKind::kConst:
        return e.value;
      case ExprKind::kName: {
        if (const Value* v = Lookup(e.name, scope)) return *v;
        if (std::optional<Value> g = LookupGlobal(e.name, clock_)) return *g;
        return Value::Undefined(absl::StrCat("'", e.name, "' is undefined"));
      }
      case ExprKind::kList:
      case ExprKind::kTuple: {
        std::vector<Value> items;
        for (const ExprPtr& c : e.children) {
          DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*c, scope));
          items.push_back(std::move(v));
        }
        return e.kind == ExprKind::kList ? Value::List(std::move(items))
                                         : Value::Tuple(std::move(items));
      }
      case ExprKind::kDict: {
        auto dict = std::make_shared<Dict>();
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          DSERVE_ASSIGN_OR_RETURN(Value key, Eval(*e.children[i], scope));
          DSERVE_ASSIGN_OR_RETURN(Value value, Eval(*e.children[i + 1], scope));
          if (!key.is_string()) return Unsupported("dict literals with keys that are not strings");
          dict->Set(key.str(), std::move(value));
        }
        return Value::FromDict(std::move(dict));
      }
      case ExprKind::kGetAttr: {
        DSERVE_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        return GetAttr(obj, e.name);
      }
      case ExprKind::kGetItem: {
        DSERVE_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        const Expr& key = *e.children[1];
        if (key.kind == ExprKind::kSlice) {
          Value bounds[3];
          for (int i = 0; i < 3; ++i) {
            bounds[i] = Value::None();
            if (key.children[i]) {
              DSERVE_ASSIGN_OR_RETURN(bounds[i], Eval(*key.children[i], scope));
            }
          }
          absl::StatusOr<Value> sliced = GetSlice(obj, bounds[0], bounds[1], bounds[2]);
          if (folding_ && !sliced.ok() &&
              absl::StartsWith(sliced.status().message(), "TypeError")) {
            // Folded at compile time through environment.getitem, which turns the TypeError
            // into an Undefined.
            std::string repr = "slice(";
            for (int i = 0; i < 3; ++i) {
              DSERVE_ASSIGN_OR_RETURN(std::string r, Repr(bounds[i]));
              absl::StrAppend(&repr, i > 0 ? ", " : "", r);
            }
            return Value::Undefined(
                absl::StrCat(ObjectTypeRepr(obj), " has no element ", repr, ")"));
          }
          return sliced;
        }
        DSERVE_ASSIGN_OR_RETURN(Value k, Eval(key, scope));
        return GetItem(obj, k);
      }
      case ExprKind::kSlice:
        return Unsupported("a slice outside of a subscript");
      case ExprKind::kCall: {
        DSERVE_ASSIGN_OR_RETURN(Value callee, Eval(*e.children[0], scope));
        DSERVE_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.call, scope));
        return Call(callee, args);
      }
      case ExprKind::kFilter: {
        Value input;
        if (e.children[0]) {
          DSERVE_ASSIGN_OR_RETURN(input, Eval(*e.children[0], scope));
        } else if (block_input_ != nullptr) {
          input = *block_input_;
        }
        DSERVE_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.call, scope));
        return ApplyFilter(e.name, input, args);
      }
      case ExprKind::kTest: {
        DSERVE_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0], scope));
        DSERVE_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.call, scope));
        DSERVE_ASSIGN_OR_RETURN(bool passed, ApplyTest(e.name, input, args));
        return Value::Bool(passed);
      }
      case ExprKind::kUnary: {
        DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        return UnaryOp(e.name, v);
      }
      case ExprKind::kBinary: {
        DSERVE_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
        DSERVE_ASSIGN_OR_RETURN(Value b, Eval(*e.children[1], scope));
        return BinaryOp(e.name, a, b);
      }
      case ExprKind::kConcat: {
        std::string text;
        for (const ExprPtr& c : e.children) {
          DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*c, scope));
          DSERVE_ASSIGN_OR_RETURN(std::string part, ToStr(v));
          text += part;
        }
        return Value::String(std::move(text));
      }
      case ExprKind::kCompare: {
        // Chained like Python: a < b < c is (a < b) and (b < c), stopping at the first false.
        DSERVE_ASSIGN_OR_RETURN(Value left, Eval(*e.children[0], scope));
        for (size_t i = 0; i < e.ops.size(); ++i) {
          DSERVE_ASSIGN_OR_RETURN(Value right, Eval(*e.children[i + 1], scope));
          DSERVE_ASSIGN_OR_RETURN(bool holds, CompareOp(e.ops[i], left, right));
          if (!holds) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case ExprKind::kAnd:
      case ExprKind::kOr: {
        DSERVE_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
        if (Truthy(a) == (e.kind == ExprKind::kOr)) return a;
        return Eval(*e.children[1], scope);
      }
      case ExprKind::kNot: {
        DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        return Value::Bool(!Truthy(v));
      }
      case ExprKind::kCondExpr: {
        DSERVE_ASSIGN_OR_RETURN(Value test, Eval(*e.children[1], scope));
        if (Truthy(test)) return Eval(*e.children[0], scope);
        if (e.children[2]) return Eval(*e.children[2], scope);
        return Value::Undefined(absl::StrCat("the inline if-expression on line ", e.line,
                                             " evaluated to false and no else section was "
                                             "defined."));
      }
    }
    return Unsupported("this expression");
  }

  absl::StatusOr<CallArgs> EvalArgs(const CallExprArgs& call, Scope& scope) {
    CallArgs args;
    for (const ExprPtr& a : call.args) {
      DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*a, scope));
      args.args.push_back(std::move(v));
    }
    for (const auto& [k, a] : call.kwargs) {
      DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*a, scope));
      args.kwargs.emplace_back(k, std::move(v));
    }
    if (call.star_args) {
      DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*call.star_args, scope));
      DSERVE_ASSIGN_OR_RETURN(std::vector<Value> more, Iterate(v));
      for (Value& m : more) args.args.push_back(std::move(m));
    }
    if (call.star_kwargs) {
      DSERVE_ASSIGN_OR_RETURN(Value v, Eval(*call.star_kwargs, scope));
      if (v.kind() != Value::Kind::kDict) {
        return TypeError(absl::StrCat("argument after ** must be a mapping, not ", TypeName(v)));
      }
      for (const auto& [k, item] : v.dict().entries()) {
        for (const auto& existing : args.kwargs) {
          if (existing.first == k) {
            return TypeError(absl::StrCat("got multiple values for keyword argument '", k, "'"));
          }
        }
        args.kwargs.emplace_back(k, item);
      }
    }
    return args;
  }

  absl::StatusOr<Value> Call(const Value& callee, const CallArgs& args) {
    switch (callee.kind()) {
      case Value::Kind::kCallable:
        return callee.callable().fn(args);
      case Value::Kind::kUndefined:
        return UndefinedError(callee);
      case Value::Kind::kObject:
        if (callee.object().TypeName() == "LoopContext") {
          return Unsupported("calling loop() (recursive for loops)");
        }
        break;
      default:
        break;
    }
    return TypeError(absl::StrCat("'", TypeName(callee), "' object is not callable"));
  }

  // jinja2 folds a {{ }} whose expression is built from literals only (as_const) when it
  // compiles the template; only slicing behaves differently there (see kGetItem).
  static bool IsConstant(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kName:
      case ExprKind::kCall:
        return false;
      case ExprKind::kFilter:
        // Filters that take the render context are never folded.
        if (e.children[0] == nullptr || e.name == "map" || e.name == "select" ||
            e.name == "reject" || e.name == "selectattr" || e.name == "rejectattr" ||
            FilterNameStatus(e.name) == NameStatus::kUnknown) {
          return false;
        }
        break;
      case ExprKind::kCondExpr:
        if (e.children[2] == nullptr) return false;
        break;
      default:
        break;
    }
    for (const ExprPtr& c : e.children) {
      if (c && !IsConstant(*c)) return false;
    }
    for (const ExprPtr& c : e.call.args) {
      if (!IsConstant(*c)) return false;
    }
    for (const auto& [k, c] : e.call.kwargs) {
      if (!IsConstant(*c)) return false;
    }
    return !e.call.star_args && !e.call.star_kwargs;
  }

  const Dict& variables_;
  const Clock& clock_;
  bool folding_ = false;
  // The captured text a {% set x | filter %} block's filters apply to.
  const Value* block_input_ = nullptr;
};

}  // namespace

absl::StatusOr<std::string> RenderTemplate(const Template& tmpl, const Dict& variables,
                                           const Clock& clock) {
  Interpreter interpreter(variables, clock);
  Scope root(nullptr);
  root.BindUndefined(tmpl.undefined_at_entry);
  std::string out;
  DSERVE_ASSIGN_OR_RETURN(Flow flow, interpreter.ExecBody(tmpl.body, root, &out));
  (void)flow;
  return out;
}

}  // namespace dserve::engine::jinja
