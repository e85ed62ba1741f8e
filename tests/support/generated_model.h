// Checkpoints generated from a preset (make-model's random weights, the published layout),
// once per test process and preset, in the run's scratch folder.
#pragma once

#include <cstdint>
#include <string>

namespace dserve::testing {

// The folder of `preset` generated with `seed`; a failed generation fails the calling test.
const std::string& GeneratedModelDir(const std::string& preset, uint64_t seed);

}  // namespace dserve::testing
