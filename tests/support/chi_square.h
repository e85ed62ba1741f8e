// Pearson's chi-square test of homogeneity for two samples of categorical outcomes, with the
// p-value from the regularised upper incomplete gamma function (no statistics library here).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace dserve::testing {

struct ChiSquare {
  double statistic = 0;
  int degrees_of_freedom = 0;
  double p_value = 1;
  int categories = 0;  // after pooling the rare ones
};

// Q(a, x) = Gamma(a, x) / Gamma(a): the chi-square survival function is Q(df / 2, x / 2).
double RegularizedUpperGamma(double a, double x);

// Counts of each outcome in two samples. Outcomes whose expected count (under the hypothesis
// that both samples come from one distribution) is below min_expected in either sample are
// pooled into one category, which is dropped too if still below it.
template <typename Outcome>
ChiSquare TwoSampleChiSquare(const std::map<Outcome, int64_t>& a,
                             const std::map<Outcome, int64_t>& b, double min_expected = 5.0);

ChiSquare TwoSampleChiSquare(const std::vector<std::pair<int64_t, int64_t>>& counts,
                             double min_expected = 5.0);

template <typename Outcome>
ChiSquare TwoSampleChiSquare(const std::map<Outcome, int64_t>& a,
                             const std::map<Outcome, int64_t>& b, double min_expected) {
  std::map<Outcome, std::pair<int64_t, int64_t>> joined;
  for (const auto& [k, n] : a) joined[k].first += n;
  for (const auto& [k, n] : b) joined[k].second += n;
  std::vector<std::pair<int64_t, int64_t>> counts;
  for (const auto& [k, c] : joined) counts.push_back(c);
  return TwoSampleChiSquare(counts, min_expected);
}

}  // namespace dserve::testing
