// The CUDA backend's straightforward matrix product: F32 activations times a weight in any
// stored dtype (FP8 with its block scales, BF16, F16, F32) dequantised in the kernel, F32
// accumulation — the CPU op's arithmetic on every shape (the FP8 tensor-core path through
// cuBLASLt has shape limits and quantises the activations). Plus the dtype conversions the
// cuBLASLt paths need around them.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/weight_view.h"

namespace dserve::kernels::cuda {

// out[m, w.rows] = x[m, w.cols] * W^T, row-major F32 on the device.
cudaError_t LaunchLinear(const float* x, int64_t m, const WeightView& w, float* out,
                         cudaStream_t stream);

// out[i] = float(in[i]) for n BF16 values.
cudaError_t LaunchBf16ToF32(const uint16_t* in, int64_t n, float* out, cudaStream_t stream);
// out[i] = bf16(in[i]) (round to nearest even) for n values.
cudaError_t LaunchF32ToBf16(const float* in, int64_t n, uint16_t* out, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
