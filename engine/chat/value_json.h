// Between JSON and template values: the request's messages, tools and kwargs become Python
// objects as json.loads would make them, and values go back to text through json.dumps exactly
// as Hugging Face's tojson filter calls it.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/chat/value.h"
#include "nlohmann/json.hpp"

namespace dserve::engine::jinja {

// Python's json.loads result for j (objects keep their key order).
absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j);

// json.dumps(v, ensure_ascii=..., indent=..., separators=..., sort_keys=...).
struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // already the indent text: ' ' * n for an int
  std::optional<std::pair<std::string, std::string>> separators;  // (item, key)
  bool sort_keys = false;
};
absl::StatusOr<std::string> DumpJson(const Value& v, const JsonDumpOptions& options);

}  // namespace dserve::engine::jinja
