// Writes arrays in NumPy's .npy format (version 1.0, little-endian, C order), so checking
// tools can load what `dserve logits` produces with numpy.load.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dserve {

absl::Status WriteNpyFloat32(const std::string& path, std::span<const float> values,
                             const std::vector<int64_t>& shape);

}  // namespace dserve
