// How a latent cache's tokens are stored, as the CUDA kernels see it (kernels/latent_cache.h
// defines the three formats; FP8 = E4M3 latent, F32 scale per 128 values, BF16 k_pe).
#pragma once

#include <cstdint>

// Host and device code both size tokens with it.
#ifdef __CUDACC__
#define DSERVE_HOST_DEVICE __host__ __device__
#else
#define DSERVE_HOST_DEVICE
#endif

namespace dserve::kernels::cuda {

enum class LatentFormat : int { kF32, kBF16, kFp8 };

// Bytes of one cached token in `format` (latent_cache.h's LatentCacheShape::token_bytes()).
DSERVE_HOST_DEVICE inline int64_t LatentTokenBytes(LatentFormat format, int64_t kv_lora, int64_t rope_dim) {
  switch (format) {
    case LatentFormat::kF32: return (kv_lora + rope_dim) * 4;
    case LatentFormat::kBF16: return (kv_lora + rope_dim) * 2;
    case LatentFormat::kFp8: return kv_lora + (kv_lora + 127) / 128 * 4 + rope_dim * 2;
  }
  return 0;
}

}  // namespace dserve::kernels::cuda
