#include "kernels/cuda/device_memory.h"

#include <cstdio>

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace dserve::kernels::cuda {
namespace {

// Not fatal: after a kernel fault (a sticky error) or while the runtime unloads at exit,
// cudaFree fails too, and aborting here would hide the error that matters.
void FreeDevice(void* p) {
  const cudaError_t error = cudaFree(p);
  if (error != cudaSuccess && error != cudaErrorCudartUnloading) {
    std::fprintf(stderr, "dserve: cudaFree failed: %s (%s)\n", cudaGetErrorName(error),
                 cudaGetErrorString(error));
  }
}

}  // namespace

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no GPU: clear the error so later calls start clean
    return 0;
  }
  return count;
}

absl::Status DeviceAvailable() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("no CUDA device: cudaGetDeviceCount: ",
                                               cudaGetErrorName(error), " (",
                                               cudaGetErrorString(error), ")"));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device visible");
  return absl::OkStatus();
}

absl::StatusOr<DeviceInfo> GetDeviceInfo(int device) {
  cudaDeviceProp prop;
  DSERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  DSERVE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
  return info;
}

absl::StatusOr<std::shared_ptr<Buffer>> AllocateDevice(size_t bytes) {
  void* p = nullptr;
  const cudaError_t error = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat(
        "cudaMalloc(", bytes, " bytes) failed: ", cudaGetErrorName(error), " (",
        cudaGetErrorString(error), ")"));
  }
  return std::make_shared<Buffer>(p, bytes, Device::kCuda, &FreeDevice);
}

absl::StatusOr<Tensor> DeviceTensor(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  DSERVE_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> buffer,
                          AllocateDevice(static_cast<size_t>(n) * DTypeSize(dtype)));
  return Tensor(std::move(buffer), dtype, std::move(shape));
}

absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  DSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  DSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost));
  return absl::OkStatus();
}

absl::Status FillDevice(void* device_dst, unsigned char byte, size_t bytes) {
  DSERVE_CUDA_RETURN_IF_ERROR(cudaMemset(device_dst, byte, bytes));
  return absl::OkStatus();
}

absl::Status Synchronize() {
  DSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Upload(const Tensor& host) {
  DSERVE_ASSIGN_OR_RETURN(Tensor t, DeviceTensor(host.dtype(), host.shape()));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(t.raw(), host.raw(), host.bytes()));
  return t;
}

absl::StatusOr<Tensor> Download(const Tensor& device) {
  Tensor t(AllocateHost(device.bytes()), device.dtype(), device.shape());
  DSERVE_RETURN_IF_ERROR(CopyToHost(t.raw(), device.raw(), device.bytes()));
  return t;
}

}  // namespace dserve::kernels::cuda
