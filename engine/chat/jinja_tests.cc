#include "engine/chat/jinja_tests.h"

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"
#include "engine/chat/operators.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {
namespace {

constexpr std::string_view kTestNames[] = {
    "odd",     "even",   "divisibleby", "defined",  "undefined", "filter", "test",    "none",
    "boolean", "false",  "true",        "integer",  "float",     "lower",  "upper",   "string",
    "mapping", "number", "sequence",    "iterable", "callable",  "sameas", "escaped", "in",
    "==",      "eq",     "equalto",     "!=",       "ne",        ">",      "gt",      "greaterthan",
    ">=",      "ge",     "<",           "lt",       "lessthan",  "<=",     "le"};

// The operator a comparison test stands for, or "" if name is not one.
std::string_view ComparisonOf(std::string_view name) {
  if (name == "==" || name == "eq" || name == "equalto") return "==";
  if (name == "!=" || name == "ne") return "!=";
  if (name == ">" || name == "gt" || name == "greaterthan") return ">";
  if (name == ">=" || name == "ge") return ">=";
  if (name == "<" || name == "lt" || name == "lessthan") return "<";
  if (name == "<=" || name == "le") return "<=";
  return "";
}

// `value % divisor == expected`, as jinja2's odd/even/divisibleby compute it.
absl::StatusOr<bool> ModEquals(const Value& value, const Value& divisor, int64_t expected) {
  if (value.is_string()) {
    return TypeError("not all arguments converted during string formatting");
  }
  DSERVE_ASSIGN_OR_RETURN(Value mod, BinaryOp("%", value, divisor));
  return Equals(mod, Value::Int(expected));
}

// Python's `a is b` where the answer does not depend on CPython's object caching.
absl::StatusOr<bool> SameAs(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kBool:
      return a.bool_value() == b.bool_value();
    case Value::Kind::kInt:
      // CPython caches -5..256; other equal ints may or may not be the same object.
      if (a.int_value() >= -5 && a.int_value() <= 256) return a.int_value() == b.int_value();
      if (a.int_value() != b.int_value()) return false;
      break;
    case Value::Kind::kFloat:
    case Value::Kind::kString:
      if (!Equals(a, b)) return false;
      if (a.identity() == b.identity()) return true;
      break;
    default:
      return a.identity() == b.identity();
  }
  return Unsupported(
      "`is sameas` on equal numbers or strings (CPython's answer depends on "
      "object caching)");
}

}  // namespace

NameStatus TestNameStatus(std::string_view name) {
  for (std::string_view n : kTestNames) {
    if (n == name) return NameStatus::kSupported;
  }
  return NameStatus::kUnknown;
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& value, const CallArgs& args) {
  using K = Value::Kind;
  if (TestNameStatus(name) == NameStatus::kUnknown) {
    return PyError("TemplateRuntimeError", absl::StrCat("No test named '", Sv(name), "' found."));
  }
  if (std::string_view op = ComparisonOf(name); !op.empty()) {
    DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(absl::StrCat(Sv(name), "()"), args, {"other"}, 1));
    return CompareOp(op, value, *a[0]);
  }
  if (name == "in") {
    DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("in()", args, {"seq"}, 1));
    return Contains(*a[0], value);
  }
  if (name == "divisibleby") {
    DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("divisibleby()", args, {"num"}, 1));
    return ModEquals(value, *a[0], 0);
  }
  if (name == "sameas") {
    DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("sameas()", args, {"other"}, 1));
    return SameAs(value, *a[0]);
  }
  DSERVE_RETURN_IF_ERROR(BindArgs(absl::StrCat(Sv(name), "()"), args, {}, 0).status());
  if (name == "odd") return ModEquals(value, Value::Int(2), 1);
  if (name == "even") return ModEquals(value, Value::Int(2), 0);
  if (name == "defined") return !value.is_undefined();
  if (name == "undefined") return value.is_undefined();
  if (name == "filter" || name == "test") {
    if (!value.is_string()) return false;
    return (name == "filter" ? FilterNameStatus(value.str()) : TestNameStatus(value.str())) !=
           NameStatus::kUnknown;
  }
  if (name == "none") return value.is_none();
  if (name == "boolean") return value.kind() == K::kBool;
  if (name == "false") return value.kind() == K::kBool && !value.bool_value();
  if (name == "true") return value.kind() == K::kBool && value.bool_value();
  if (name == "integer") return value.kind() == K::kInt;
  if (name == "float") return value.kind() == K::kFloat;
  if (name == "number") return value.is_number();
  if (name == "string") return value.is_string();
  if (name == "mapping") return value.kind() == K::kDict;
  if (name == "escaped") return value.is_string() && value.markup();
  if (name == "lower" || name == "upper") {
    DSERVE_ASSIGN_OR_RETURN(std::string s, ToStr(value));
    return name == "lower" ? PyIsLower(s) : PyIsUpper(s);
  }
  if (name == "sequence") {
    // len() and __getitem__ both exist (dict and Undefined included, dict views not).
    switch (value.kind()) {
      case K::kUndefined:
      case K::kString:
      case K::kDict:
        return true;
      case K::kSeq:
        return value.seq().kind == SeqKind::kList || value.seq().kind == SeqKind::kTuple ||
               value.seq().kind == SeqKind::kRange;
      default:
        return false;
    }
  }
  if (name == "iterable") {
    switch (value.kind()) {
      case K::kUndefined:
      case K::kString:
      case K::kSeq:
      case K::kDict:
      case K::kGenerator:
        return true;
      case K::kObject:
        return value.object().TypeName() == "LoopContext";
      default:
        return false;
    }
  }
  // "callable": jinja2's Undefined and loop object define __call__ too.
  return value.kind() == K::kCallable || value.is_undefined() ||
         (value.kind() == K::kObject && value.object().TypeName() == "LoopContext");
}

}  // namespace dserve::engine::jinja
