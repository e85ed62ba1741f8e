// The global functions a chat template can call: jinja2's defaults (range, dict, namespace) and
// the two Hugging Face adds (raise_exception, strftime_now).
#pragma once

#include <ctime>
#include <functional>
#include <optional>
#include <string_view>

#include "engine/chat/value.h"

namespace dserve::engine::jinja {

using Clock = std::function<std::time_t()>;

// The global `name`, or nullopt when there is none. strftime_now reads `clock` (local time).
std::optional<Value> LookupGlobal(std::string_view name, const Clock& clock);

}  // namespace dserve::engine::jinja
