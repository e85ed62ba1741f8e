// Moving rows of F32 activations on the GPU: gathering chosen rows (the LM head's rows, a
// MoE expert's tokens), joining two matrices side by side (the MTP module's [embedding |
// hidden]), and adding weighted expert outputs back to their tokens' rows.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace dserve::kernels::cuda {

// out[i, :] = x[rows[i], :] for i < n; rows on the device.
cudaError_t LaunchGatherRows(const float* x, int64_t width, const int32_t* rows, int64_t n,
                             float* out, cudaStream_t stream);
// out[t] = [a[t] (a_cols values), b[t] (b_cols values)] for t < rows.
cudaError_t LaunchConcatColumns(const float* a, int64_t a_cols, const float* b, int64_t b_cols,
                                int64_t rows, float* out, cudaStream_t stream);
// out[rows[i], :] += scales[i] * y[i, :] for i < n. rows must be distinct within one launch
// (no atomics: one expert's tokens are).
cudaError_t LaunchScatterAddScaled(const float* y, int64_t width, const int32_t* rows,
                                   const float* scales, int64_t n, float* out,
                                   cudaStream_t stream);

}  // namespace dserve::kernels::cuda
