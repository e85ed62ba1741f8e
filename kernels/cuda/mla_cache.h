// Writing MLA's latent cache on the GPU: each new token's kv_a row (kv_a_proj_with_mqa's
// output) is split into the latent (RMS-normalised with kv_a_layernorm) and k_pe (RoPE on
// interleaved pairs at the token's position) and stored at its slot in the cache's format (F32,
// BF16, or FP8: E4M3 latent with one F32 scale per 128 values, BF16 k_pe), in the layout of
// kernels::LatentCache.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/latent_format.h"

namespace dserve::kernels::cuda {

struct MlaCacheWrite {
  const float* kv_a = nullptr;      // [rows, kv_lora + rope] F32
  int64_t rows = 0;
  int64_t kv_lora = 0;              // 512 in DeepSeek-V3
  int64_t rope_dim = 0;             // 64
  const float* kv_norm = nullptr;   // [kv_lora] kv_a_layernorm weight
  float eps = 1e-6f;
  const float* cos = nullptr;       // [positions, rope / 2], YaRN's mscale folded in
  const float* sin = nullptr;
  const int32_t* positions = nullptr;     // [rows] RoPE position of each row
  const int64_t* slot_offsets = nullptr;  // [rows] byte offset of each row's slot in `cache`
  void* cache = nullptr;            // where the offsets count from (the layer's first page)
  LatentFormat format = LatentFormat::kBF16;
};

cudaError_t LaunchMlaWriteCache(const MlaCacheWrite& p, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
