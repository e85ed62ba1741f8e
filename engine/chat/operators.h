// Python's operators on template values (arithmetic, comparison, membership) and jinja2's
// sandboxed attribute, item and slice lookup, with Python's results and error messages.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

// op: "+", "-", "*", "/", "//", "%", "**".
absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b);
// op: "-" or "+".
absl::StatusOr<Value> UnaryOp(std::string_view op, const Value& v);
// op: "==", "!=", "<", "<=", ">", ">=", "in", "notin".
absl::StatusOr<bool> CompareOp(std::string_view op, const Value& a, const Value& b);
// `item in container`.
absl::StatusOr<bool> Contains(const Value& container, const Value& item);

// obj.name: an attribute (or method) first, then the item; Undefined when neither exists.
absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name);
// obj[key]: the item first, then (for a str key) the attribute; Undefined when neither exists.
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// obj[start:stop:step]; each bound may be None.
absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step);

}  // namespace dserve::engine::jinja
