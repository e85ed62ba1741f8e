// Python's methods on str, dict, list, tuple and range as jinja2's ImmutableSandboxedEnvironment
// exposes them: bound methods that work like CPython's, sandbox-refused mutators as the
// Undefined that raises SecurityError, and methods dserve does not implement as callables that
// fail naming the method.
#pragma once

#include <optional>
#include <string_view>

#include "engine/chat/value.h"

namespace dserve::engine::jinja {

// obj.name when Python's type of obj has an attribute of that name; nullopt otherwise (then
// jinja2 looks for an item, e.g. a dict key).
std::optional<Value> PythonAttribute(const Value& obj, std::string_view name);

// The bound str method `name` of s, or nullopt when str has no such attribute.
std::optional<Value> StrMethod(const Value& s, std::string_view name);

// A callable named `qualified` ("str.format") that fails as not implemented.
Value UnsupportedMethod(std::string qualified);

}  // namespace dserve::engine::jinja
