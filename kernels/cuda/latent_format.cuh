// Device-side reads of one cached latent token in any LatentFormat: value c of the token at
// `token` (its first byte), exactly as kernels/latent_cache.h's ReadTokens decodes it on the
// host. For .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "kernels/cuda/latent_format.h"

namespace dserve::kernels::cuda {

// Unaligned-safe little-endian reads (FP8 tokens put their scales and k_pe at byte offsets that
// need not be 4- or 2-aligned for every kv_lora).
__device__ __forceinline__ float LoadF32Bytes(const uint8_t* p) {
  const uint32_t bits = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                        static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  return __uint_as_float(bits);
}
__device__ __forceinline__ float LoadBf16Bytes(const uint8_t* p) {
  const uint32_t bits = (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8) << 16;
  return __uint_as_float(bits);
}

template <LatentFormat F>
__device__ __forceinline__ float LatentValue(const uint8_t* token, int c, int kv_lora) {
  if constexpr (F == LatentFormat::kF32) {
    return reinterpret_cast<const float*>(token)[c];
  } else if constexpr (F == LatentFormat::kBF16) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(token)[c]);
  } else {
    const int groups = (kv_lora + 127) / 128;
    if (c < kv_lora) {
      __nv_fp8_e4m3 v;
      v.__x = token[c];
      return static_cast<float>(v) * LoadF32Bytes(token + kv_lora + 4 * (c / 128));
    }
    return LoadBf16Bytes(token + kv_lora + 4 * groups + 2 * (c - kv_lora));
  }
}

}  // namespace dserve::kernels::cuda
