#include "tests/support/chi_square.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dserve::testing {

double RegularizedUpperGamma(double a, double x) {
  if (x <= 0) return 1.0;
  const double log_prefix = a * std::log(x) - x - std::lgamma(a);
  if (x < a + 1) {
    // Series for P(a, x), then Q = 1 - P.
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 1000 && std::fabs(term) > std::fabs(sum) * 1e-16; ++n) {
      term *= x / (a + n);
      sum += term;
    }
    return 1.0 - sum * std::exp(log_prefix);
  }
  // Continued fraction for Q(a, x) (modified Lentz).
  const double tiny = std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
  double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < 1e-16) break;
  }
  return std::exp(log_prefix) * h;
}

ChiSquare TwoSampleChiSquare(const std::vector<std::pair<int64_t, int64_t>>& counts,
                             double min_expected) {
  double total_a = 0, total_b = 0;
  for (const auto& [a, b] : counts) {
    total_a += static_cast<double>(a);
    total_b += static_cast<double>(b);
  }
  const double total = total_a + total_b;
  std::vector<std::pair<double, double>> kept;
  double pooled_a = 0, pooled_b = 0;
  auto enough = [&](double a, double b) {
    const double n = a + b;
    return n * total_a / total >= min_expected && n * total_b / total >= min_expected;
  };
  for (const auto& [a, b] : counts) {
    if (enough(static_cast<double>(a), static_cast<double>(b))) {
      kept.emplace_back(static_cast<double>(a), static_cast<double>(b));
    } else {
      pooled_a += static_cast<double>(a);
      pooled_b += static_cast<double>(b);
    }
  }
  if (enough(pooled_a, pooled_b)) kept.emplace_back(pooled_a, pooled_b);
  ChiSquare out;
  out.categories = static_cast<int>(kept.size());
  double kept_a = 0, kept_b = 0;
  for (const auto& [a, b] : kept) {
    kept_a += a;
    kept_b += b;
  }
  const double kept_total = kept_a + kept_b;
  for (const auto& [a, b] : kept) {
    const double n = a + b;
    const double ea = n * kept_a / kept_total, eb = n * kept_b / kept_total;
    out.statistic += (a - ea) * (a - ea) / ea + (b - eb) * (b - eb) / eb;
  }
  out.degrees_of_freedom = std::max(0, out.categories - 1);
  out.p_value = out.degrees_of_freedom > 0
                    ? RegularizedUpperGamma(out.degrees_of_freedom / 2.0, out.statistic / 2.0)
                    : 1.0;
  return out;
}

}  // namespace dserve::testing
