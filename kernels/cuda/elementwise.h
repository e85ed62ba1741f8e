// Row-wise and elementwise kernels of the CUDA backend (the Ops of the same names, on device
// pointers, F32 activations): RMSNorm (alone and fused with the residual add), SwiGLU's
// silu(gate) * up, x += y, and the embedding gather. Each launches on `stream` and returns the
// launch's error; nothing synchronises.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace dserve::kernels::cuda {

// out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight, for rows t < rows of `cols` values.
// out may be x.
cudaError_t LaunchRmsNorm(const float* x, const float* weight, float eps, int64_t rows,
                          int64_t cols, float* out, cudaStream_t stream);
// residual += delta, then out = RmsNorm(residual). out may be delta, not residual.
cudaError_t LaunchAddRmsNorm(float* residual, const float* delta, const float* weight, float eps,
                             int64_t rows, int64_t cols, float* out, cudaStream_t stream);
// out[i] = silu(gate[i]) * up[i]; out may be gate.
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream);
// x[i] += y[i].
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

enum class TableType { kF32, kBF16 };
// out[t, :] = table[ids[t], :] as F32; ids on the device, each in [0, vocab).
cudaError_t LaunchEmbedding(const void* table, TableType type, int64_t cols, const int32_t* ids,
                            int64_t rows, float* out, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
