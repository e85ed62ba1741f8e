// MLA attention on the GPU in the weight-absorbed form over the paged latent cache: kv_b's key
// half folded into each query, attention over the cached [latent | k_pe] tokens, kv_b's value
// half applied to the latent output. The same function as the CPU op (kernels/cpu/cpu_mla.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/latent_format.h"
#include "kernels/cuda/weight_view.h"

namespace dserve::kernels::cuda {

// What the kernels accept (checked by LaunchMlaAttention): the latent and the query's RoPE part
// are held per warp lane in registers and q_cat in shared memory, so both have ceilings
// (DeepSeek-V3 is at them: 512 and 64).
inline constexpr int64_t kMlaMaxKvLora = 512;
inline constexpr int64_t kMlaMaxRopeDim = 64;
inline constexpr int64_t kMlaMaxNopeDim = 256;

struct MlaAttentionParams {
  const float* q = nullptr;  // [rows, heads, nope + rope] F32, RoPE not yet applied
  int64_t rows = 0;
  int64_t heads = 0;     // 128 in DeepSeek-V3
  int64_t nope_dim = 0;  // 128
  int64_t rope_dim = 0;  // 64, even
  int64_t v_dim = 0;     // 128
  int64_t kv_lora = 0;   // 512
  // [heads * (nope + v), kv_lora]: per head its W_UK rows [h * (nope + v), + nope), then its
  // W_UV rows [h * (nope + v) + nope, (h + 1) * (nope + v)).
  WeightView kv_b;
  const float* cos = nullptr;  // [positions, rope / 2], YaRN's mscale folded in
  const float* sin = nullptr;
  const int32_t* positions = nullptr;  // [rows] RoPE position of each row (within cos/sin)
  // [rows] how many cached tokens row r attends to, causally: its sequence's tokens cached
  // before this step + its index among the step's new tokens + 1. Rows with 0 keys get zeros.
  const int32_t* row_keys = nullptr;
  const int32_t* row_table = nullptr;  // [rows] offset of its sequence's table in block_tables
  const int32_t* block_tables = nullptr;  // concatenated block tables: physical page ids
  // This layer's pages [num_pages, page_size, token bytes] (LatentCache's layout with the
  // layer offset applied), tokens in `format` (latent_format.h).
  const void* cache = nullptr;
  LatentFormat format = LatentFormat::kBF16;
  int64_t page_size = 64;
  float softmax_scale = 1.0f;
  float* workspace = nullptr;  // MlaAttentionWorkspaceFloats(rows, heads, kv_lora, rope) floats
  float* out = nullptr;        // [rows, heads, v] F32
};

// F32 scratch LaunchMlaAttention needs: the absorbed, scaled queries [rows, heads, kv_lora +
// rope] and the normalised latent outputs [rows, heads, kv_lora].
size_t MlaAttentionWorkspaceFloats(int64_t rows, int64_t heads, int64_t kv_lora,
                                   int64_t rope_dim);

// Enqueues the attention on `stream`. cudaErrorInvalidValue (nothing launched) for sizes out of
// range, an odd rope_dim, kv_b not [heads * (nope + v), kv_lora] or missing device pointers
// when rows > 0; cudaSuccess without a launch when rows == 0; otherwise the launch's error.
// Block tables, row_keys and positions are not checked on the device: the caller guarantees
// every key a row attends to lies in a page of its table and every position in cos/sin.
cudaError_t LaunchMlaAttention(const MlaAttentionParams& p, cudaStream_t stream);

// The two projections around the attention alone, for callers that attend with another kernel
// (mla/decode.h, on tensor cores): q_cat into the workspace's first part (W_UK-absorbed,
// RoPE'd, times the softmax scale), and later `out` from the normalised latent outputs o_lat
// that kernel wrote into the workspace's second part.
cudaError_t LaunchMlaAbsorbQuery(const MlaAttentionParams& p, cudaStream_t stream);
cudaError_t LaunchMlaOutput(const MlaAttentionParams& p, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
