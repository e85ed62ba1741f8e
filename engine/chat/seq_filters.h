// The filters over sequences (first, last, list, join, map, select, reject, selectattr,
// rejectattr, unique, items, reverse), lazy where jinja2's are generators. Used by filters.cc.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

absl::StatusOr<Value> FilterFirst(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterLast(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterList(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterJoin(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterMap(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterSelect(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterReject(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterSelectAttr(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterRejectAttr(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterUnique(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterItems(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterReverse(const Value& value, const CallArgs& args);

}  // namespace dserve::engine::jinja
