// Device memory for the CUDA backend: one RAII allocation path (a core::Buffer on Device::kCuda,
// freed when its last Tensor goes), checked copies, and what the device is.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace dserve::kernels::cuda {

struct DeviceInfo {
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0, free_bytes = 0;
};

// Number of visible CUDA devices; 0 (not an error) when there is no driver or no GPU.
int DeviceCount();
// OK when a device is visible; otherwise why not (cudaGetDeviceCount's error, or none found).
absl::Status DeviceAvailable();
absl::StatusOr<DeviceInfo> GetDeviceInfo(int device = 0);

// `bytes` of device memory (at least 256-byte aligned, as cudaMalloc gives it).
absl::StatusOr<std::shared_ptr<Buffer>> AllocateDevice(size_t bytes);
// A device tensor of this dtype and shape.
absl::StatusOr<Tensor> DeviceTensor(DType dtype, std::vector<int64_t> shape);

absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes);
absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes);
// Fills with a byte pattern (tests poison outputs with 0xFF bytes: NaN in F32 and BF16).
absl::Status FillDevice(void* device_dst, unsigned char byte, size_t bytes);
absl::Status Synchronize();

// A host tensor's bytes on the device, and back.
absl::StatusOr<Tensor> Upload(const Tensor& host);
absl::StatusOr<Tensor> Download(const Tensor& device);

}  // namespace dserve::kernels::cuda
