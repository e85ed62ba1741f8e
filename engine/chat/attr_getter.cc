#include "engine/chat/attr_getter.h"

#include <algorithm>
#include <string>

#include "core/check.h"
#include "engine/chat/operators.h"

namespace dserve::engine::jinja {

absl::StatusOr<Value> AttrGetter::operator()(const Value& item) const {
  Value v = item;
  for (const Value& part : parts) {
    DSERVE_ASSIGN_OR_RETURN(v, GetItem(v, part));
    if (default_value && v.is_undefined()) v = *default_value;
  }
  return v;
}

AttrGetter MakeAttrGetter(const std::optional<Value>& attribute,
                          std::optional<Value> default_value) {
  AttrGetter getter;
  if (default_value && default_value->is_none()) default_value.reset();
  getter.default_value = std::move(default_value);
  if (!attribute || attribute->is_none()) return getter;
  if (!attribute->is_string()) {
    getter.parts.push_back(*attribute);
    return getter;
  }
  const std::string& path = attribute->str();
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    getter.parts.push_back(digits && part.size() < 19 ? Value::Int(std::stoll(part))
                                                      : Value::String(std::move(part)));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return getter;
}

}  // namespace dserve::engine::jinja
