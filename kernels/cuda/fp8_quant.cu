#include "kernels/cuda/fp8_quant.h"

#include <cuda_fp8.h>

namespace dserve::kernels::cuda {
namespace {

// One warp per 128-value group: 4 values per lane.
__global__ void QuantizeKernel(const float* x, int64_t groups_per_row, int64_t total_groups,
                               int64_t stride, uint8_t* q, float* scales) {
  const int64_t group = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (group >= total_groups) return;
  const int lane = threadIdx.x % 32;
  const int64_t row = group / groups_per_row, g = group % groups_per_row;
  const int64_t base = row * groups_per_row * kFp8Group + g * kFp8Group;
  float v[4];
  float amax = 0.0f;
  for (int i = 0; i < 4; ++i) {
    v[i] = x[base + lane + 32 * i];
    amax = fmaxf(amax, fabsf(v[i]));
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  }
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  for (int i = 0; i < 4; ++i) {
    q[base + lane + 32 * i] = static_cast<uint8_t>(
        __nv_cvt_float_to_fp8(v[i] / scale, __NV_SATFINITE, __NV_E4M3));
  }
  if (lane == 0) scales[g * stride + row] = scale;
}

// Scale 1 in the padding rows [rows, stride) of every group's column.
__global__ void FillPadding(int64_t rows, int64_t stride, float* scales) {
  for (int64_t r = rows + threadIdx.x; r < stride; r += blockDim.x) {
    scales[blockIdx.x * stride + r] = 1.0f;
  }
}

}  // namespace

cudaError_t LaunchQuantizeFp8PerGroup(const float* x, int64_t rows, int64_t cols, uint8_t* q,
                                      float* scales, cudaStream_t stream) {
  if (cols % kFp8Group != 0) return cudaErrorInvalidValue;
  const int64_t groups_per_row = cols / kFp8Group, total = rows * groups_per_row;
  if (total == 0) return cudaSuccess;
  const int64_t stride = Fp8ScaleStride(rows);
  if (stride > rows) {
    FillPadding<<<static_cast<unsigned>(groups_per_row), 32, 0, stream>>>(rows, stride, scales);
  }
  constexpr int kWarps = 8;
  const unsigned blocks = static_cast<unsigned>((total + kWarps - 1) / kWarps);
  QuantizeKernel<<<blocks, kWarps * 32, 0, stream>>>(x, groups_per_row, total, stride, q, scales);
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
