// The ordering filters (sort, dictsort, min, max) and sum. Sorting follows CPython's list.sort
// step by step for fewer than 64 items, so that even the TypeError of unorderable values names
// the same pair; longer lists use an equivalent stable sort and refuse what it cannot decide.
#pragma once

#include "absl/status/statusor.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

absl::StatusOr<Value> FilterSort(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterDictSort(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterMin(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterMax(const Value& value, const CallArgs& args);
absl::StatusOr<Value> FilterSum(const Value& value, const CallArgs& args);

}  // namespace dserve::engine::jinja
