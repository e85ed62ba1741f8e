// Comparing what the engine computed in float with a float64 reference.
#pragma once

#include <cstdint>

namespace dserve::testing {

// max |got - ref| / max |ref| over n values.
double RelError(const float* got, const double* ref, int64_t n);

}  // namespace dserve::testing
