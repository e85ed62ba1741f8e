// Measures this machine's read bandwidth the way a decode step reads weights: all threads
// streaming through a buffer, once.
#pragma once

#include <cstddef>

namespace dserve::cli {

// Median GB/s of `runs` full passes over a buffer of `bytes` with `threads` threads.
double MeasureReadBandwidth(size_t bytes, int threads, int runs);

}  // namespace dserve::cli
