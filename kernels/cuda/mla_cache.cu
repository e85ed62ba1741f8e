#include "kernels/cuda/mla_cache.h"

#include <cuda_bf16.h>

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ void Store(T* dst, float v);
template <>
__device__ void Store(float* dst, float v) { *dst = v; }
template <>
__device__ void Store(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16_rn(v); }

// One block per row.
template <typename T>
__global__ void WriteKernel(MlaCacheWrite p, T* cache) {
  __shared__ float partial[kThreads / 32];
  const int64_t row = blockIdx.x;
  const float* src = p.kv_a + row * (p.kv_lora + p.rope_dim);
  T* dst = cache + p.slot_offsets[row];
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < p.kv_lora; i += blockDim.x) sum += src[i] * src[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  const float inv = 1.0f / sqrtf(total / static_cast<float>(p.kv_lora) + p.eps);
  for (int64_t i = threadIdx.x; i < p.kv_lora; i += blockDim.x) {
    Store(dst + i, src[i] * inv * p.kv_norm[i]);
  }
  const int64_t half = p.rope_dim / 2;
  const float* cos = p.cos + static_cast<int64_t>(p.positions[row]) * half;
  const float* sin = p.sin + static_cast<int64_t>(p.positions[row]) * half;
  const float* pe = src + p.kv_lora;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float a = pe[2 * i], b = pe[2 * i + 1];
    Store(dst + p.kv_lora + 2 * i, a * cos[i] - b * sin[i]);
    Store(dst + p.kv_lora + 2 * i + 1, b * cos[i] + a * sin[i]);
  }
}

}  // namespace

cudaError_t LaunchMlaWriteCache(const MlaCacheWrite& p, cudaStream_t stream) {
  if (p.rope_dim % 2 != 0 || p.kv_lora < 1) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(p.rows);
  if (p.bf16) {
    WriteKernel<<<grid, kThreads, 0, stream>>>(p, static_cast<__nv_bfloat16*>(p.cache));
  } else {
    WriteKernel<<<grid, kThreads, 0, stream>>>(p, static_cast<float*>(p.cache));
  }
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
