#include "engine/chat/methods.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"

namespace dserve::engine::jinja {
namespace {

bool OneOf(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

Value Refused(std::string_view type, std::string_view name) {
  return Value::Undefined(
      absl::StrCat("access to attribute '", Sv(name), "' of '", Sv(type), "' object is unsafe."),
      /*security=*/true);
}

absl::Status NoArgs(std::string_view func, const CallArgs& call) {
  return BindArgs(func, call, {}, 0).status();
}

std::optional<Value> DictMethod(const Value& obj, std::string_view name) {
  if (name == "get") {
    return Value::Function("dict.get", [obj](const CallArgs& call) -> absl::StatusOr<Value> {
      DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("dict.get()", call, {"key", "default"}, 1));
      if (a[0]->is_string()) {
        if (const Value* v = obj.dict().Find(a[0]->str())) return *v;
      }
      return a[1].value_or(Value::None());
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    const SeqKind kind = name == "items"  ? SeqKind::kDictItems
                         : name == "keys" ? SeqKind::kDictKeys
                                          : SeqKind::kDictValues;
    return Value::Function(absl::StrCat("dict.", Sv(name)),
                           [obj, kind](const CallArgs& call) -> absl::StatusOr<Value> {
                             DSERVE_RETURN_IF_ERROR(NoArgs("dict view", call));
                             auto seq = std::make_shared<Sequence>();
                             seq->kind = kind;
                             for (const auto& [k, v] : obj.dict().entries()) {
                               if (kind == SeqKind::kDictItems) {
                                 seq->items.push_back(Value::Tuple({Value::String(k), v}));
                               } else if (kind == SeqKind::kDictKeys) {
                                 seq->items.push_back(Value::String(k));
                               } else {
                                 seq->items.push_back(v);
                               }
                             }
                             return Value::Seq(std::move(seq));
                           });
  }
  if (name == "copy") {
    return Value::Function("dict.copy", [obj](const CallArgs& call) -> absl::StatusOr<Value> {
      DSERVE_RETURN_IF_ERROR(NoArgs("dict.copy()", call));
      return Value::FromDict(std::make_shared<const Dict>(obj.dict()));
    });
  }
  if (OneOf(name, {"clear", "pop", "popitem", "setdefault", "update"})) {
    return Refused("dict", name);
  }
  if (name == "fromkeys") return UnsupportedMethod("dict.fromkeys");
  return std::nullopt;
}

// list.count / list.index (and tuple's, range's).
Value SearchMethod(const Value& obj, std::string_view name) {
  const std::string qualified = absl::StrCat(TypeName(obj), ".", Sv(name));
  const bool count = name == "count";
  return Value::Function(
      qualified, [obj, count, qualified](const CallArgs& call) -> absl::StatusOr<Value> {
        DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs(qualified + "()", call, {"value"}, 1));
        int64_t n = 0;
        const auto& items = obj.seq().items;
        for (size_t i = 0; i < items.size(); ++i) {
          if (!Equals(items[i], *a[0])) continue;
          if (!count) return Value::Int(static_cast<int64_t>(i));
          ++n;
        }
        if (count) return Value::Int(n);
        DSERVE_ASSIGN_OR_RETURN(std::string r, Repr(*a[0]));
        return ValueError(absl::StrCat(r, " is not in ", TypeName(obj)));
      });
}

std::optional<Value> SeqMethod(const Value& obj, std::string_view name) {
  const Sequence& s = obj.seq();
  switch (s.kind) {
    case SeqKind::kList:
      if (name == "count" || name == "index") return SearchMethod(obj, name);
      if (name == "copy") {
        return Value::Function("list.copy", [obj](const CallArgs& call) -> absl::StatusOr<Value> {
          DSERVE_RETURN_IF_ERROR(NoArgs("list.copy()", call));
          return Value::List(obj.seq().items);
        });
      }
      if (OneOf(name, {"append", "reverse", "insert", "sort", "extend", "remove"})) {
        return Refused("list", name);
      }
      // The sandbox lets these through, but they mutate the list; dserve's lists are immutable.
      if (name == "pop" || name == "clear")
        return UnsupportedMethod(absl::StrCat("list.", Sv(name)));
      return std::nullopt;
    case SeqKind::kTuple:
      if (name == "count" || name == "index") return SearchMethod(obj, name);
      return std::nullopt;
    case SeqKind::kRange:
      if (name == "count" || name == "index") return SearchMethod(obj, name);
      if (name == "start") return Value::Int(s.start);
      if (name == "stop") return Value::Int(s.stop);
      if (name == "step") return Value::Int(s.step);
      return std::nullopt;
    case SeqKind::kDictItems:
    case SeqKind::kDictKeys:
      if (name == "isdisjoint" || name == "mapping") {
        return UnsupportedMethod(absl::StrCat(TypeName(obj), ".", Sv(name)));
      }
      return std::nullopt;
    case SeqKind::kDictValues:
      if (name == "mapping") return UnsupportedMethod("dict_values.mapping");
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

Value UnsupportedMethod(std::string qualified) {
  return Value::Function(qualified, [qualified](const CallArgs&) -> absl::StatusOr<Value> {
    return Unsupported(absl::StrCat("the method ", qualified, "()"));
  });
}

std::optional<Value> PythonAttribute(const Value& obj, std::string_view name) {
  switch (obj.kind()) {
    case Value::Kind::kString:
      return StrMethod(obj, name);
    case Value::Kind::kDict:
      return DictMethod(obj, name);
    case Value::Kind::kSeq:
      return SeqMethod(obj, name);
    case Value::Kind::kInt:
    case Value::Kind::kBool:
      if (OneOf(name, {"as_integer_ratio", "bit_count", "bit_length", "conjugate", "denominator",
                       "from_bytes", "imag", "numerator", "real", "to_bytes"})) {
        return UnsupportedMethod(absl::StrCat(TypeName(obj), ".", Sv(name)));
      }
      return std::nullopt;
    case Value::Kind::kFloat:
      if (OneOf(name, {"as_integer_ratio", "conjugate", "fromhex", "hex", "imag", "is_integer",
                       "real"})) {
        return UnsupportedMethod(absl::StrCat("float.", Sv(name)));
      }
      return std::nullopt;
    case Value::Kind::kGenerator:
      if (OneOf(name, {"close", "send", "throw", "gi_code", "gi_frame", "gi_running",
                       "gi_yieldfrom", "gi_suspended"})) {
        return UnsupportedMethod(absl::StrCat("generator.", Sv(name)));
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

}  // namespace dserve::engine::jinja
