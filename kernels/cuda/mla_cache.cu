#include "kernels/cuda/mla_cache.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// FP8 caches: the normalised latent is staged in shared memory to find each group's scale.
constexpr int kMaxFp8Latent = 1024;

__device__ void StoreBytes(uint8_t* dst, const void* src, int n) {
  for (int i = 0; i < n; ++i) dst[i] = static_cast<const uint8_t*>(src)[i];
}

template <LatentFormat F>
__device__ void Store(uint8_t* token, int64_t c, float v) {
  if constexpr (F == LatentFormat::kF32) {
    reinterpret_cast<float*>(token)[c] = v;
  } else {
    reinterpret_cast<__nv_bfloat16*>(token)[c] = __float2bfloat16_rn(v);
  }
}

// One block per row.
template <LatentFormat F>
__global__ void WriteKernel(MlaCacheWrite p) {
  __shared__ float partial[kWarps];
  __shared__ float latent[F == LatentFormat::kFp8 ? kMaxFp8Latent : 1];
  const int64_t row = blockIdx.x;
  const float* src = p.kv_a + row * (p.kv_lora + p.rope_dim);
  uint8_t* token = static_cast<uint8_t*>(p.cache) + p.slot_offsets[row];
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < p.kv_lora; i += blockDim.x) sum += src[i] * src[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) total += partial[w];
  const float inv = 1.0f / sqrtf(total / static_cast<float>(p.kv_lora) + p.eps);
  const int64_t half = p.rope_dim / 2;
  const float* cos = p.cos + static_cast<int64_t>(p.positions[row]) * half;
  const float* sin = p.sin + static_cast<int64_t>(p.positions[row]) * half;
  const float* pe = src + p.kv_lora;
  if constexpr (F != LatentFormat::kFp8) {
    for (int64_t i = threadIdx.x; i < p.kv_lora; i += blockDim.x) {
      Store<F>(token, i, src[i] * inv * p.kv_norm[i]);
    }
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const float a = pe[2 * i], b = pe[2 * i + 1];
      Store<F>(token, p.kv_lora + 2 * i, a * cos[i] - b * sin[i]);
      Store<F>(token, p.kv_lora + 2 * i + 1, b * cos[i] + a * sin[i]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < p.kv_lora; i += blockDim.x) {
      latent[i] = src[i] * inv * p.kv_norm[i];
    }
    __syncthreads();
    // A warp per group of 128: its largest magnitude sets the scale (latent_cache.h's
    // EncodeFp8Token: amax / 448, 1 for zeros; then x / scale rounded to E4M3, saturating).
    const int groups = static_cast<int>((p.kv_lora + 127) / 128);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int g = warp; g < groups; g += kWarps) {
      const int begin = g * 128;
      const int end = min(static_cast<int>(p.kv_lora), begin + 128);
      float amax = 0.0f;
      for (int c = begin + lane; c < end; c += 32) amax = fmaxf(amax, fabsf(latent[c]));
      for (int offset = 16; offset > 0; offset /= 2) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
      }
      const float scale = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
      for (int c = begin + lane; c < end; c += 32) {
        token[c] = static_cast<uint8_t>(
            __nv_cvt_float_to_fp8(__fdiv_rn(latent[c], scale), __NV_SATFINITE, __NV_E4M3));
      }
      if (lane == 0) StoreBytes(token + p.kv_lora + 4 * g, &scale, 4);
    }
    uint8_t* pe_dst = token + p.kv_lora + 4 * groups;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const float a = pe[2 * i], b = pe[2 * i + 1];
      const __nv_bfloat16 r0 = __float2bfloat16_rn(a * cos[i] - b * sin[i]);
      const __nv_bfloat16 r1 = __float2bfloat16_rn(b * cos[i] + a * sin[i]);
      StoreBytes(pe_dst + 4 * i, &r0, 2);
      StoreBytes(pe_dst + 4 * i + 2, &r1, 2);
    }
  }
}

}  // namespace

cudaError_t LaunchMlaWriteCache(const MlaCacheWrite& p, cudaStream_t stream) {
  if (p.rope_dim % 2 != 0 || p.kv_lora < 1) return cudaErrorInvalidValue;
  if (p.format == LatentFormat::kFp8 && p.kv_lora > kMaxFp8Latent) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(p.rows);
  switch (p.format) {
    case LatentFormat::kF32: WriteKernel<LatentFormat::kF32><<<grid, kThreads, 0, stream>>>(p); break;
    case LatentFormat::kBF16:
      WriteKernel<LatentFormat::kBF16><<<grid, kThreads, 0, stream>>>(p);
      break;
    case LatentFormat::kFp8: WriteKernel<LatentFormat::kFp8><<<grid, kThreads, 0, stream>>>(p); break;
  }
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
