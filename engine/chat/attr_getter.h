// jinja2's make_attrgetter, behind the attribute= argument of map, select*, join, unique, sort,
// min, max and sum: "a.b.0" looked up part by part like obj[part] (digit-only parts as ints).
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

struct AttrGetter {
  std::vector<Value> parts;
  // Replaces an Undefined after each step (map's default=).
  std::optional<Value> default_value;

  absl::StatusOr<Value> operator()(const Value& item) const;
};

// attribute: null for the item itself, a str path, or any other key.
AttrGetter MakeAttrGetter(const std::optional<Value>& attribute,
                          std::optional<Value> default_value = std::nullopt);

}  // namespace dserve::engine::jinja
