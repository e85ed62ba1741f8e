// The MoE grouped GEMM: every expert's rows of one projection in one launch, over the row tiles
// of a dispatch (dispatch.h), on BF16 tensor cores with FP8 (block-scaled) or BF16 weights.
#pragma once

// A plain C++17 header: the .cu includes it (CMake compiles CUDA as C++17).
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/moe/dispatch.h"

namespace dserve::kernels::cuda {

enum class MoeWeightType : int {
  kFp8E4M3,  // E4M3 with 128x128 block scales (weight_scale_inv as published)
  kBF16,
};

// One expert's projections on the device (each its own allocation, 16-byte aligned), as the
// checkpoint stores them: row-major [out features, in features].
struct MoeExpertWeights {
  const void* gate = nullptr;  // [inter, hidden]
  const void* up = nullptr;    // [inter, hidden]
  const void* down = nullptr;  // [hidden, inter]
  // FP8 only: [rows / 128, cols / 128] F32, element (r, c) is fp8(r, c) * scale[r/128][c/128].
  const float* gate_scale = nullptr;
  const float* up_scale = nullptr;
  const float* down_scale = nullptr;
};

enum class MoeGemmKind : int {
  // act[s, :] = bf16(silu(x[t] W_gate^T) * (x[t] W_up^T)) for every slot s, t = slot_token[s]:
  // SwiGLU fused into the epilogue (one CTA holds the gate and up columns of the same outputs).
  kGateUp,
  // y[s, :] = act[s, :] W_down^T in F32 for every slot s.
  kDown,
};

// Reduction steps per pipeline stage (one FP8 scale block); k must be a multiple.
inline constexpr int64_t kMoeGemmBlockK = 128;

// Rows per tile for `pairs` routed over `experts`: 16 while experts average at most 16 rows
// (decode: the weights are streamed once and the MMA's spare rows cost nothing), 64 up to 48,
// else 128 (prefill). Every choice computes bit-identical results (the same k order and
// arithmetic per output), so this only moves speed.
int32_t MoeGemmBlockM(int64_t pairs, int32_t experts);

struct MoeGemmParams {
  MoeGemmKind kind = MoeGemmKind::kGateUp;
  MoeWeightType weight_type = MoeWeightType::kFp8E4M3;
  const MoeExpertWeights* experts = nullptr;  // device [num_experts]
  int32_t num_experts = 0;
  // Output columns: kGateUp the intermediate size (a multiple of 64), kDown the hidden size
  // (a multiple of 128).
  int64_t n = 0;
  // Reduction: kGateUp the hidden size, kDown the intermediate size (a multiple of 128).
  int64_t k = 0;
  // BF16 activations [a_rows, k], 16-byte aligned: kGateUp the tokens' rows x (gathered through
  // slot_token inside the kernel), kDown the SwiGLU outputs in slot order (a_rows >= slots).
  const uint16_t* a = nullptr;
  int64_t a_rows = 0;
  const int32_t* slot_token = nullptr;  // kGateUp: the dispatch's slot_token; kDown: unused
  // [slots, n], 16-byte aligned: kGateUp BF16, kDown F32. Only the dispatch's slots are written.
  void* out = nullptr;
  // The dispatch's tiles and tile count (device), MoeMaxTiles of its shape, its block_m.
  const MoeTile* tiles = nullptr;
  const int32_t* num_tiles = nullptr;
  int64_t max_tiles = 0;
  int32_t block_m = 0;  // 16, 64 or 128 (MoeGemmBlockM)
};

// Enqueues the grouped GEMM on `stream`: a CTA per (tile, 128 weight rows) up to max_tiles, those
// past *num_tiles exit. BF16 mma.sync with F32 accumulation; FP8 weights enter the MMA exactly
// (E4M3 values are BF16 values) and their block scale multiplies each 128-deep partial sum in
// F32; activations are whatever BF16 the caller rounded. cudaErrorInvalidValue (nothing
// launched) for shapes out of range, null or misaligned pointers, or another block_m;
// cudaSuccess without a launch when max_tiles is 0.
cudaError_t LaunchMoeGroupedGemm(const MoeGemmParams& p, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
