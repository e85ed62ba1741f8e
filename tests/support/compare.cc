#include "tests/support/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dserve::testing {

double RelError(const float* got, const double* ref, int64_t n) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(got[i] - ref[i]);
    // A NaN or infinity anywhere must fail the comparison; std::max would skip a NaN.
    if (!std::isfinite(diff)) return std::numeric_limits<double>::infinity();
    err = std::max(err, diff);
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return err / scale;
}

}  // namespace dserve::testing
