#include "engine/chat/call_args.h"

#include "absl/strings/str_cat.h"
#include "engine/chat/errors.h"

namespace dserve::engine::jinja {

absl::StatusOr<std::vector<std::optional<Value>>> BindArgs(
    std::string_view func, const CallArgs& call, std::initializer_list<std::string_view> params,
    size_t required) {
  const std::vector<std::string_view> names(params);
  std::vector<std::optional<Value>> bound(names.size());
  if (call.args.size() > names.size()) {
    return TypeError(absl::StrCat(Sv(func), " takes at most ", names.size(), " argument",
                                  names.size() == 1 ? "" : "s", " (", call.args.size(), " given)"));
  }
  for (size_t i = 0; i < call.args.size(); ++i) bound[i] = call.args[i];
  for (const auto& [key, value] : call.kwargs) {
    size_t i = 0;
    while (i < names.size() && names[i] != key) ++i;
    if (i == names.size()) {
      return TypeError(absl::StrCat(Sv(func), " got an unexpected keyword argument '", key, "'"));
    }
    if (bound[i].has_value()) {
      return TypeError(absl::StrCat(Sv(func), " got multiple values for argument '", key, "'"));
    }
    bound[i] = value;
  }
  for (size_t i = 0; i < required; ++i) {
    if (!bound[i].has_value()) {
      return TypeError(absl::StrCat(Sv(func), " missing required argument '", Sv(names[i]),
                                    "' (pos ", i + 1, ")"));
    }
  }
  return bound;
}

absl::StatusOr<int64_t> IntArg(const Value& v, std::string_view what) {
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_integral()) {
    return TypeError(absl::StrCat("'", TypeName(v),
                                  "' object cannot be interpreted as an "
                                  "integer (",
                                  Sv(what), ")"));
  }
  return v.int_value();
}

absl::StatusOr<std::string> StrArg(const Value& v, std::string_view what) {
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_string()) {
    return TypeError(
        absl::StrCat(Sv(what), what.empty() ? "" : " ", "must be str, not ", TypeName(v)));
  }
  return v.str();
}

}  // namespace dserve::engine::jinja
