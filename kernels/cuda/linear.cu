#include "kernels/cuda/linear.h"

#include <cuda_bf16.h>

#include "kernels/cuda/weight_view.cuh"

namespace dserve::kernels::cuda {
namespace {

// A block computes a kTileM x kTileN tile of out, stepping through k in kTileK slices held
// in shared memory (weights dequantised as they are loaded); each of the 256 threads owns
// 2 x 4 outputs spaced 16 apart, so neighbouring threads read neighbouring shared columns.
constexpr int kTileM = 32, kTileN = 64, kTileK = 32, kThreads = 256;

__global__ void LinearKernel(const float* x, int64_t m, WeightView w, float* out) {
  __shared__ float xs[kTileM][kTileK + 1];
  __shared__ float ws[kTileN][kTileK + 1];
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[2][4] = {};
  for (int64_t k0 = 0; k0 < w.cols; k0 += kTileK) {
    for (int i = threadIdx.x; i < kTileM * kTileK; i += kThreads) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t row = m0 + r, col = k0 + c;
      xs[r][c] = row < m && col < w.cols ? x[row * w.cols + col] : 0.0f;
    }
    for (int i = threadIdx.x; i < kTileN * kTileK; i += kThreads) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t row = n0 + r, col = k0 + c;
      ws[r][c] = row < w.rows && col < w.cols ? WeightAt(w, row, col) : 0.0f;
    }
    __syncthreads();
    for (int c = 0; c < kTileK; ++c) {
      float xv[2], wv[4];
      for (int i = 0; i < 2; ++i) xv[i] = xs[ty + 16 * i][c];
      for (int j = 0; j < 4; ++j) wv[j] = ws[tx + 16 * j][c];
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xv[i], wv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i) {
    const int64_t row = m0 + ty + 16 * i;
    if (row >= m) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx + 16 * j;
      if (col < w.rows) out[row * w.rows + col] = acc[i][j];
    }
  }
}

__global__ void Bf16ToF32Kernel(const __nv_bfloat16* in, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

__global__ void F32ToBf16Kernel(const float* in, int64_t n, __nv_bfloat16* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(in[i]);
  }
}

unsigned ElementwiseBlocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

}  // namespace

cudaError_t LaunchLinear(const float* x, int64_t m, const WeightView& w, float* out,
                         cudaStream_t stream) {
  if (m < 0 || w.rows < 1 || w.cols < 1 || !w.data) return cudaErrorInvalidValue;
  if (w.type == WeightType::kFp8E4M3 && (!w.scale_inv || w.block_rows < 1 || w.block_cols < 1)) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  if (!x || !out) return cudaErrorInvalidValue;
  const int64_t tiles_m = (m + kTileM - 1) / kTileM;
  if (tiles_m > 65535) return cudaErrorInvalidValue;  // grid.y limit: 2M rows
  const dim3 grid(static_cast<unsigned>((w.rows + kTileN - 1) / kTileN),
                  static_cast<unsigned>(tiles_m));
  LinearKernel<<<grid, kThreads, 0, stream>>>(x, m, w, out);
  return cudaGetLastError();
}

cudaError_t LaunchBf16ToF32(const uint16_t* in, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  Bf16ToF32Kernel<<<ElementwiseBlocks(n), kThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(in), n, out);
  return cudaGetLastError();
}

cudaError_t LaunchF32ToBf16(const float* in, int64_t n, uint16_t* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  F32ToBf16Kernel<<<ElementwiseBlocks(n), kThreads, 0, stream>>>(
      in, n, reinterpret_cast<__nv_bfloat16*>(out));
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
