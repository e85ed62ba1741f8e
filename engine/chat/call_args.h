// Python-style binding of a call's positional and keyword arguments to a builtin's parameters,
// with Python's TypeErrors for missing, extra and repeated arguments.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

// One slot per parameter, nullopt where the caller left it to its default. The first
// `required` parameters must be given. `func` names the callable in errors ("str.split()").
absl::StatusOr<std::vector<std::optional<Value>>> BindArgs(
    std::string_view func, const CallArgs& call, std::initializer_list<std::string_view> params,
    size_t required);

// Typed views of a bound argument, with Python's TypeErrors naming `what` (StrArg: "<what>
// must be str, not int", or Python's bare "must be str, not int" when what is empty).
absl::StatusOr<int64_t> IntArg(const Value& v, std::string_view what);
absl::StatusOr<std::string> StrArg(const Value& v, std::string_view what);

}  // namespace dserve::engine::jinja
