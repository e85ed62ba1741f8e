#include "kernels/cuda/elementwise.h"

#include <cuda_bf16.h>

namespace dserve::kernels::cuda {
namespace {

constexpr int kRowThreads = 256;

// Sum of v over the block (every thread gets it). kRowThreads / 32 warps.
__device__ float BlockSum(float v) {
  __shared__ float partial[kRowThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kRowThreads / 32; ++w) total += partial[w];
  __syncthreads();  // partial is reused by the next call
  return total;
}

__global__ void RmsNormKernel(const float* x, const float* weight, float eps, int64_t cols,
                              float* out) {
  const float* row = x + blockIdx.x * cols;
  float* dst = out + blockIdx.x * cols;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) sum += row[i] * row[i];
  const float scale = rsqrtf(BlockSum(sum) / static_cast<float>(cols) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = row[i] * scale * weight[i];
}

__global__ void AddRmsNormKernel(float* residual, const float* delta, const float* weight,
                                 float eps, int64_t cols, float* out) {
  float* row = residual + blockIdx.x * cols;
  const float* d = delta + blockIdx.x * cols;
  float* dst = out + blockIdx.x * cols;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = row[i] + d[i];
    row[i] = v;
    sum += v * v;
  }
  const float scale = rsqrtf(BlockSum(sum) / static_cast<float>(cols) + eps);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = row[i] * scale * weight[i];
}

__global__ void SiluMulKernel(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

template <typename T>
__device__ float ToFloat(T v);
template <>
__device__ float ToFloat(float v) { return v; }
template <>
__device__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__global__ void EmbeddingKernel(const T* table, int64_t cols, const int32_t* ids, float* out) {
  const T* row = table + static_cast<int64_t>(ids[blockIdx.x]) * cols;
  float* dst = out + blockIdx.x * cols;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = ToFloat(row[i]);
}

// Enough blocks to fill the GPU with a grid-stride loop, not more than the work needs.
unsigned GridFor(int64_t n) {
  const int64_t blocks = (n + kRowThreads - 1) / kRowThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* weight, float eps, int64_t rows,
                          int64_t cols, float* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(x, weight, eps, cols,
                                                                         out);
  return cudaGetLastError();
}

cudaError_t LaunchAddRmsNorm(float* residual, const float* delta, const float* weight, float eps,
                             int64_t rows, int64_t cols, float* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  AddRmsNormKernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      residual, delta, weight, eps, cols, out);
  return cudaGetLastError();
}

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SiluMulKernel<<<GridFor(n), kRowThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<GridFor(n), kRowThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchEmbedding(const void* table, TableType type, int64_t cols, const int32_t* ids,
                            int64_t rows, float* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(rows);
  if (type == TableType::kBF16) {
    EmbeddingKernel<<<grid, kRowThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(table), cols, ids, out);
  } else {
    EmbeddingKernel<<<grid, kRowThreads, 0, stream>>>(static_cast<const float*>(table), cols,
                                                      ids, out);
  }
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
