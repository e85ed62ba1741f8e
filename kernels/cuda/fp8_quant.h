// DeepSeek's activation quantisation for FP8 GEMMs: every row cut into groups of 128 values,
// each group scaled so its largest magnitude maps to 448 (E4M3's largest finite value) and
// rounded to E4M3; the F32 scale s (value = fp8 * s) is kept per group.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace dserve::kernels::cuda {

inline constexpr int64_t kFp8Group = 128;

// Rows of the scale matrix as cuBLASLt's 1x128 (VEC128_32F) mode reads it: a multiple of 4.
inline int64_t Fp8ScaleStride(int64_t rows) { return (rows + 3) / 4 * 4; }

// x [rows, cols] F32 (cols a multiple of 128) -> q [rows, cols] E4M3 bytes (row-major) and
// scales [cols / 128][Fp8ScaleStride(rows)] F32: group g of row r at g * stride + r, the rows
// contiguous per group as cuBLASLt wants them; padding entries are 1. A group of zeros gets
// scale 1.
cudaError_t LaunchQuantizeFp8PerGroup(const float* x, int64_t rows, int64_t cols, uint8_t* q,
                                      float* scales, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
