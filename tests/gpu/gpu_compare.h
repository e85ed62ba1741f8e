// How a CUDA op's output agrees with the CPU op's: max absolute error, error relative to the
// largest reference magnitude, cosine similarity, and how many outputs are not finite (outputs
// are poisoned with NaN before the op runs, so a NaN left over is an element never written).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace dserve::testing {

struct Agreement {
  double max_abs = 0, rel = 0, cosine = 1;
  int64_t non_finite = 0;
};

inline Agreement Compare(const float* got, const float* want, int64_t n) {
  Agreement a;
  double dot = 0, gg = 0, ww = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) {
      ++a.non_finite;
      continue;
    }
    const double g = got[i], w = want[i];
    a.max_abs = std::max(a.max_abs, std::fabs(g - w));
    max_ref = std::max(max_ref, std::fabs(w));
    dot += g * w;
    gg += g * g;
    ww += w * w;
  }
  a.rel = max_ref > 0 ? a.max_abs / max_ref : a.max_abs;
  a.cosine = gg > 0 && ww > 0 ? dot / std::sqrt(gg * ww) : (gg == ww ? 1.0 : 0.0);
  return a;
}

// Every element written and finite, within max_abs and rel, cosine at least min_cosine.
inline void ExpectAgree(const float* got, const float* want, int64_t n, double max_abs,
                        double rel, double min_cosine, const std::string& what) {
  const Agreement a = Compare(got, want, n);
  EXPECT_EQ(a.non_finite, 0) << what << ": elements not written (or not finite)";
  EXPECT_LE(a.max_abs, max_abs) << what;
  EXPECT_LE(a.rel, rel) << what;
  EXPECT_GE(a.cosine, min_cosine) << what;
}

}  // namespace dserve::testing
