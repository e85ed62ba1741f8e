// Presets for `dserve make-model`: small DeepSeek-architecture models whose config.json has
// the same keys, and whose checkpoint the same tensor names and dtypes, as the published ones.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace dserve::models {

struct Preset {
  std::string name;
  std::string description;
  nlohmann::ordered_json config;  // config.json, quantization_config included when FP8
};

const std::vector<Preset>& AllPresets();
absl::StatusOr<Preset> FindPreset(const std::string& name);

}  // namespace dserve::models
