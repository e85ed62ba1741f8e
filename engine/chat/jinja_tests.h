// jinja2's tests (`x is defined`, `x is divisibleby 3`, ...), evaluated as jinja2 does.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/filters.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

NameStatus TestNameStatus(std::string_view name);

// `value is name(args)`.
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& value, const CallArgs& args);

}  // namespace dserve::engine::jinja
