#include "kernels/cuda/cuda_check.h"

#include "absl/strings/str_cat.h"

namespace dserve::kernels::cuda {

absl::Status CudaStatus(cudaError_t error, const char* call, const char* file, int line) {
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ") at ", file, ":", line));
}

absl::Status CublasStatus(cublasStatus_t status, const char* call, const char* file, int line) {
  return absl::InternalError(absl::StrCat(call, " failed: ", cublasLtGetStatusName(status), " (",
                                          cublasLtGetStatusString(status), ") at ", file, ":",
                                          line));
}

}  // namespace dserve::kernels::cuda
