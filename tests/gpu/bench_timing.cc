#include "tests/gpu/bench_timing.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"

namespace dserve::kernels::cuda {

absl::StatusOr<double> MedianSeconds(const std::function<absl::Status()>& run,
                                     cudaStream_t stream, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) DSERVE_RETURN_IF_ERROR(run());
  DSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  DSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  DSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  std::vector<double> seconds;
  absl::Status status;
  for (int i = 0; i < reps && status.ok(); ++i) {
    status = [&]() -> absl::Status {
      DSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
      DSERVE_RETURN_IF_ERROR(run());
      DSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
      DSERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
      float ms = 0;
      DSERVE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
      seconds.push_back(ms * 1e-3);
      return absl::OkStatus();
    }();
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  DSERVE_RETURN_IF_ERROR(status);
  if (seconds.empty()) return absl::InvalidArgumentError("no timed runs");
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

absl::StatusOr<double> CopyBandwidth() {
  constexpr size_t kBytes = size_t{1} << 30;
  DSERVE_ASSIGN_OR_RETURN(Tensor src, DeviceTensor(DType::kU8, {static_cast<int64_t>(kBytes)}));
  DSERVE_ASSIGN_OR_RETURN(Tensor dst, DeviceTensor(DType::kU8, {static_cast<int64_t>(kBytes)}));
  DSERVE_RETURN_IF_ERROR(FillDevice(src.raw(), 0x3C, kBytes));
  auto copy = [&]() -> absl::Status {
    DSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst.raw(), src.raw(), kBytes, cudaMemcpyDeviceToDevice, nullptr));
    return absl::OkStatus();
  };
  DSERVE_ASSIGN_OR_RETURN(const double s, MedianSeconds(copy, nullptr, 2, 10));
  return 2.0 * kBytes / s;
}

}  // namespace dserve::kernels::cuda
