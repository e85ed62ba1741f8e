// jinja2's filters (`x | trim`, `x | tojson(indent=4)`, `xs | map(attribute='name')`), with the
// results and errors of jinja2 3.1 as Hugging Face configures it (autoescape off, its own
// tojson that keeps non-ASCII text).
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

enum class NameStatus {
  kSupported,    // implemented
  kUnsupported,  // a jinja2 builtin dserve does not implement: fails when evaluated
  kUnknown,      // not a jinja2 name at all
};

NameStatus FilterNameStatus(std::string_view name);

// `value | name(args)`.
absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& value, const CallArgs& args);

}  // namespace dserve::engine::jinja
