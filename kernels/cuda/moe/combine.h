// MoE combine: each token's expert outputs, weighted and summed back into its row (the inverse of
// the dispatch); and LaunchMoeExperts, the whole routed-expert chain on one stream.
#pragma once

// A plain C++17 header: the .cu includes it (CMake compiles CUDA as C++17).
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/cuda/moe/dispatch.h"
#include "kernels/cuda/moe/grouped_gemm.h"

namespace dserve::kernels::cuda {

// out[t, :] = sum over j ascending of weights[t, j] * y[pair_slot[t * top_k + j], :] (F32, one
// fused multiply-add per term; pairs the dispatch dropped, slot -1, add nothing). y [slots,
// hidden] F32 in the dispatch's slot order; out [tokens, hidden]. hidden a multiple of 4, y and
// out 16-byte aligned. cudaErrorInvalidValue (nothing launched) otherwise; cudaSuccess without
// a launch for no tokens.
cudaError_t LaunchMoeCombine(const float* y, const int32_t* pair_slot, const float* weights,
                             int64_t tokens, int32_t top_k, int64_t hidden, float* out,
                             cudaStream_t stream);

// The routed experts of one MoE layer, Ops::MoeExperts on device pointers: out[t] = sum_j
// weights[t, j] * expert_{ids[t, j]}(x[t]), expert(x) = down(silu(gate x) * up x).
struct MoeExpertsParams {
  const float* x = nullptr;        // [tokens, hidden] F32
  const int32_t* ids = nullptr;    // [tokens, top_k] I32, each in [0, num_experts)
  const float* weights = nullptr;  // [tokens, top_k] F32
  float* out = nullptr;            // [tokens, hidden] F32, 16-byte aligned; every row written
  int64_t tokens = 0;
  int64_t hidden = 0;  // a multiple of 128
  int64_t inter = 0;   // the experts' intermediate size, a multiple of 128
  int32_t top_k = 0;
  int32_t num_experts = 0;
  MoeWeightType weight_type = MoeWeightType::kFp8E4M3;
  const MoeExpertWeights* experts = nullptr;  // device [num_experts]
  // Rows per GEMM tile: 0 picks MoeGemmBlockM (tests force 16, 64 or 128; results are the same).
  int32_t block_m = 0;
  void* workspace = nullptr;  // MoeExpertsWorkspaceBytes, 256-byte aligned
  size_t workspace_bytes = 0;
};

// The block_m LaunchMoeExperts uses for these parameters.
int32_t MoeExpertsBlockM(const MoeExpertsParams& p);
// Workspace for p's shape: the dispatch's, x in BF16 [tokens, hidden], the SwiGLU outputs BF16
// [pairs, inter] and the down projections F32 [pairs, hidden] (DeepSeek-V3, 4096 tokens:
// about 1.1 GB; the integrator may chunk long prefills). 0 for a shape out of range.
size_t MoeExpertsWorkspaceBytes(const MoeExpertsParams& p);

// Enqueues on `stream`, without synchronising: x -> BF16, the dispatch, the gate/up grouped GEMM
// with SwiGLU, the down grouped GEMM, the combine (five launches; none for no tokens). Numerics:
// x and the SwiGLU outputs are rounded to BF16 (the MMA inputs), weights enter exactly (FP8
// block scales applied in F32), everything else F32; each token's result does not depend on
// the other tokens of the batch. cudaErrorInvalidValue (nothing launched) for shapes out of
// range, null or misaligned pointers or a workspace too small; otherwise the first launch error.
cudaError_t LaunchMoeExperts(const MoeExpertsParams& p, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
