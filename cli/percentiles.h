// Latency percentiles as the benchmark commands (`bench`, `bench-serve`) report them.
#pragma once

#include <vector>

namespace dserve::cli {

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0;
};

// Nearest-rank percentiles of v (all zero when v is empty).
Percentiles Summarise(std::vector<double> v);

}  // namespace dserve::cli
