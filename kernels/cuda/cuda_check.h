// Checked CUDA and cuBLAS calls: every failure names the call, the error's name and text, and
// file:line. _RETURN_IF_ERROR turns a failure into an absl::Status for the caller (a module
// boundary); DSERVE_CUDA_CHECK aborts, for destructors and programmer errors only.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "core/check.h"

namespace dserve::kernels::cuda {

absl::Status CudaStatus(cudaError_t error, const char* call, const char* file, int line);
absl::Status CublasStatus(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace dserve::kernels::cuda

#define DSERVE_CUDA_RETURN_IF_ERROR(call)                                                       \
  do {                                                                                         \
    const cudaError_t dserve_cuda_error_ = (call);                                             \
    if (dserve_cuda_error_ != cudaSuccess) {                                                   \
      return ::dserve::kernels::cuda::CudaStatus(dserve_cuda_error_, #call, __FILE__, __LINE__); \
    }                                                                                          \
  } while (0)

#define DSERVE_CUBLAS_RETURN_IF_ERROR(call)                                                     \
  do {                                                                                         \
    const cublasStatus_t dserve_cublas_status_ = (call);                                       \
    if (dserve_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                      \
      return ::dserve::kernels::cuda::CublasStatus(dserve_cublas_status_, #call, __FILE__,     \
                                                   __LINE__);                                  \
    }                                                                                          \
  } while (0)

#define DSERVE_CUDA_CHECK(call)                                                                 \
  do {                                                                                         \
    const cudaError_t dserve_cuda_error_ = (call);                                             \
    DSERVE_CHECK(dserve_cuda_error_ == cudaSuccess)                                            \
        << ::dserve::kernels::cuda::CudaStatus(dserve_cuda_error_, #call, __FILE__, __LINE__)  \
               .message();                                                                     \
  } while (0)
