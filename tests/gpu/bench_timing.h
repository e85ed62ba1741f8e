// What the GPU benchmarks share: the median of CUDA-event-timed runs of a piece of work, and the
// device-to-device copy bandwidth every bandwidth figure is compared against.
#pragma once

#include <functional>

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dserve::kernels::cuda {

// Median seconds of `reps` runs of `run` (which enqueues work on `stream`), each timed by CUDA
// events on that stream, after `warmup` untimed runs.
absl::StatusOr<double> MedianSeconds(const std::function<absl::Status()>& run,
                                     cudaStream_t stream, int warmup, int reps);

// A device-to-device cudaMemcpy of 1 GiB, median of 10: bytes read plus bytes written per
// second (HBM's usable bandwidth for a kernel that streams through memory).
absl::StatusOr<double> CopyBandwidth();

}  // namespace dserve::kernels::cuda
