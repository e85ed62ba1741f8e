#include "engine/chat/seq_filters.h"

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/chat/attr_getter.h"
#include "engine/chat/call_args.h"
#include "engine/chat/errors.h"
#include "engine/chat/filters.h"
#include "engine/chat/jinja_tests.h"
#include "engine/chat/operators.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {
namespace {

using ItemFn = std::function<absl::StatusOr<std::optional<Value>>(const Value&)>;

// A lazy generator over source's items, each mapped by fn (nullopt drops it). Like jinja2's
// generator filters, nothing is evaluated until the first item is asked for; check_truthy
// reproduces their `if value:` guard (a falsy source yields nothing, even None).
Value LazyGenerator(Value source, bool check_truthy, ItemFn fn) {
  struct State {
    bool started = false;
    std::vector<Value> items;
    size_t pos = 0;
  };
  auto state = std::make_shared<State>();
  auto next = [state, source = std::move(source), check_truthy,
               fn = std::move(fn)]() -> absl::StatusOr<std::optional<Value>> {
    if (!state->started) {
      state->started = true;
      if (!check_truthy || Truthy(source)) {
        DSERVE_ASSIGN_OR_RETURN(state->items, Iterate(source));
      }
    }
    while (state->pos < state->items.size()) {
      DSERVE_ASSIGN_OR_RETURN(std::optional<Value> out, fn(state->items[state->pos++]));
      if (out) return out;
    }
    return std::nullopt;
  };
  return Value::FromGenerator(std::make_shared<Generator>(std::move(next)));
}

absl::Status FilterArgumentError(std::string_view message) {
  return PyError("FilterArgumentError", message);
}

// select, reject, selectattr, rejectattr.
absl::StatusOr<Value> SelectOrReject(const Value& value, const CallArgs& args, bool select,
                                     bool lookup_attr) {
  size_t off = 0;
  AttrGetter getter;
  if (lookup_attr) {
    if (args.args.empty()) return FilterArgumentError("Missing parameter for attribute name");
    getter = MakeAttrGetter(args.args[0]);
    off = 1;
  }
  std::optional<std::string> test;
  CallArgs test_args;
  if (args.args.size() > off) {
    if (!args.args[off].is_string()) {
      return TypeError("a test name must be a string");
    }
    test = args.args[off].str();
    test_args.args.assign(args.args.begin() + off + 1, args.args.end());
  }
  test_args.kwargs = args.kwargs;
  return LazyGenerator(value, true, [=](const Value& item) -> absl::StatusOr<std::optional<Value>> {
    DSERVE_ASSIGN_OR_RETURN(Value subject, getter(item));
    bool passed;
    if (test) {
      DSERVE_ASSIGN_OR_RETURN(passed, ApplyTest(*test, subject, test_args));
    } else {
      passed = Truthy(subject);
    }
    if (passed == select) return std::optional<Value>(item);
    return std::optional<Value>();
  });
}

bool IsReversible(const Value& v) {
  return v.is_undefined() || v.is_string() || v.kind() == Value::Kind::kSeq ||
         v.kind() == Value::Kind::kDict;
}

}  // namespace

absl::StatusOr<Value> FilterFirst(const Value& value, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("first()", args, {}, 0).status());
  if (value.kind() == Value::Kind::kGenerator) {
    DSERVE_ASSIGN_OR_RETURN(std::optional<Value> item, value.generator().Next());
    if (item) return *item;
  } else {
    DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
    if (!items.empty()) return items.front();
  }
  return Value::Undefined("No first item, sequence was empty.");
}

absl::StatusOr<Value> FilterLast(const Value& value, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("last()", args, {}, 0).status());
  if (!IsReversible(value)) {
    return TypeError(absl::StrCat("'", TypeName(value), "' object is not reversible"));
  }
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  if (items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items.back();
}

absl::StatusOr<Value> FilterList(const Value& value, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("list()", args, {}, 0).status());
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FilterJoin(const Value& value, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("join()", args, {"d", "attribute"}, 0));
  std::string sep;
  if (a[0]) {
    DSERVE_ASSIGN_OR_RETURN(sep, ToStr(*a[0]));
  }
  const AttrGetter getter = MakeAttrGetter(a[1]);
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    DSERVE_ASSIGN_OR_RETURN(Value item, getter(items[i]));
    DSERVE_ASSIGN_OR_RETURN(std::string text, ToStr(item));
    if (i > 0) out += sep;
    out += text;
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FilterMap(const Value& value, const CallArgs& args) {
  std::function<absl::StatusOr<Value>(const Value&)> fn;
  const auto attribute = std::find_if(args.kwargs.begin(), args.kwargs.end(),
                                      [](const auto& kv) { return kv.first == "attribute"; });
  if (args.args.empty() && attribute != args.kwargs.end()) {
    std::optional<Value> default_value;
    for (const auto& [k, v] : args.kwargs) {
      if (k == "default") {
        default_value = v;
      } else if (k != "attribute") {
        return FilterArgumentError(absl::StrCat("Unexpected keyword argument '", k, "'"));
      }
    }
    fn = MakeAttrGetter(attribute->second, default_value);
  } else {
    if (args.args.empty()) return FilterArgumentError("map requires a filter argument");
    if (!args.args[0].is_string()) return TypeError("a filter name must be a string");
    CallArgs rest;
    rest.args.assign(args.args.begin() + 1, args.args.end());
    rest.kwargs = args.kwargs;
    fn = [name = args.args[0].str(), rest](const Value& item) {
      return ApplyFilter(name, item, rest);
    };
  }
  return LazyGenerator(value, true,
                       [fn](const Value& item) -> absl::StatusOr<std::optional<Value>> {
                         DSERVE_ASSIGN_OR_RETURN(Value out, fn(item));
                         return std::optional<Value>(std::move(out));
                       });
}

absl::StatusOr<Value> FilterSelect(const Value& value, const CallArgs& args) {
  return SelectOrReject(value, args, true, false);
}
absl::StatusOr<Value> FilterReject(const Value& value, const CallArgs& args) {
  return SelectOrReject(value, args, false, false);
}
absl::StatusOr<Value> FilterSelectAttr(const Value& value, const CallArgs& args) {
  return SelectOrReject(value, args, true, true);
}
absl::StatusOr<Value> FilterRejectAttr(const Value& value, const CallArgs& args) {
  return SelectOrReject(value, args, false, true);
}

absl::StatusOr<Value> FilterUnique(const Value& value, const CallArgs& args) {
  DSERVE_ASSIGN_OR_RETURN(auto a, BindArgs("unique()", args, {"case_sensitive", "attribute"}, 0));
  const bool case_sensitive = a[0] && Truthy(*a[0]);
  const AttrGetter getter = MakeAttrGetter(a[1]);
  auto seen = std::make_shared<std::vector<Value>>();
  return LazyGenerator(value, false,
                       [=](const Value& item) -> absl::StatusOr<std::optional<Value>> {
                         DSERVE_ASSIGN_OR_RETURN(Value key, getter(item));
                         if (!case_sensitive && key.is_string())
                           key = Value::String(PyLower(key.str()));
                         DSERVE_RETURN_IF_ERROR(CheckHashable(key));
                         for (const Value& s : *seen) {
                           if (Equals(s, key)) return std::optional<Value>();
                         }
                         seen->push_back(key);
                         return std::optional<Value>(item);
                       });
}

absl::StatusOr<Value> FilterItems(const Value& value, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("items()", args, {}, 0).status());
  auto state = std::make_shared<std::pair<bool, size_t>>(false, 0);
  auto next = [value, state]() -> absl::StatusOr<std::optional<Value>> {
    if (value.is_undefined()) return std::nullopt;
    if (value.kind() != Value::Kind::kDict) {
      return TypeError("Can only get item pairs from a mapping.");
    }
    const auto& entries = value.dict().entries();
    if (state->second >= entries.size()) return std::nullopt;
    const auto& [k, v] = entries[state->second++];
    return std::optional<Value>(Value::Tuple({Value::String(k), v}));
  };
  return Value::FromGenerator(std::make_shared<Generator>(std::move(next)));
}

absl::StatusOr<Value> FilterReverse(const Value& value, const CallArgs& args) {
  DSERVE_RETURN_IF_ERROR(BindArgs("reverse()", args, {}, 0).status());
  if (value.is_string()) {
    std::u32string cps = DecodeUtf8(value.str());
    std::reverse(cps.begin(), cps.end());
    return Value::String(EncodeUtf8(cps), value.markup());
  }
  if (value.kind() == Value::Kind::kGenerator) {
    // reversed() refuses iterators; jinja2 then builds a reversed list.
    DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (!IsReversible(value)) return FilterArgumentError("argument must be iterable");
  DSERVE_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  std::reverse(items.begin(), items.end());
  auto state = std::make_shared<std::pair<std::vector<Value>, size_t>>(std::move(items), 0);
  const std::string type_name =
      value.kind() == Value::Kind::kDict ? "dict_reversekeyiterator"
      : value.kind() == Value::Kind::kSeq && value.seq().kind == SeqKind::kList
          ? "list_reverseiterator"
          : "reversed";
  return Value::FromGenerator(std::make_shared<Generator>(
      [state]() -> absl::StatusOr<std::optional<Value>> {
        if (state->second >= state->first.size()) return std::nullopt;
        return std::optional<Value>(state->first[state->second++]);
      },
      type_name));
}

}  // namespace dserve::engine::jinja
