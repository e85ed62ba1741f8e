// MLA decode attention on tensor cores, absorbed form: the latent-space queries q_cat against the
// paged latent cache, split over the keys FlashMLA-style, into normalised latent outputs o_lat.
#pragma once

// A plain C++17 header: the .cu includes it (CMake 3.25 compiles CUDA as C++17).
#include <cstddef>
#include <cstdint>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

#include <cuda_runtime_api.h>

// LatentFormat (F32, BF16, or FP8 = E4M3 latent, an F32 scale per 128 values, BF16 k_pe) and
// LatentTokenBytes, shared with the other MLA kernels.
#include "kernels/cuda/latent_format.h"

namespace dserve::kernels::cuda {

// Shape limits (DeepSeek-V2/V3 sit at the ceilings): kv_lora and rope_dim must be multiples of
// 16 (tensor-core k-steps and 16-byte copies), kv_lora in [16, 512], rope_dim in [0, 64].
inline constexpr int64_t kMlaDecodeMaxKvLora = 512;
inline constexpr int64_t kMlaDecodeMaxRope = 64;
// Keys per tile and per unit of the split schedule.
inline constexpr int kMlaDecodeBlockKeys = 64;

// One sequence's rows in a step, described on the host.
struct MlaDecodeSequence {
  int32_t row_begin = 0;     // first of its rows in q_cat / o_lat
  int32_t num_rows = 0;      // s_q: its new tokens (>= 1; decode 1..4)
  // Cached tokens its LAST row sees. Causal: row i of num_rows sees keys - num_rows + i + 1
  // (rows that would see none get zeros).
  int32_t keys = 0;
  int32_t table_offset = 0;  // where its block table starts in block_tables
};

// The plan's scalars: what the launch needs on the host besides the uploaded arrays.
struct MlaDecodeSchedule {
  int32_t heads = 0;           // query heads the plan was made for
  int32_t num_seqs = 0;
  int32_t block_m = 64;        // query rows per CTA: 16, 32 or 64 (the smallest that holds h*s_q)
  int32_t m_blocks = 0;        // row tiles of the largest sequence (gridDim.x)
  int32_t num_parts = 0;       // key ranges, one CTA per row tile each (gridDim.y)
  int32_t num_split_seqs = 0;  // sequences whose keys span several parts (combine's grid)
  int32_t num_slots = 0;       // partial results in the workspace: their splits summed
  int32_t slot_rows = 0;       // rows per partial slot: m_blocks * block_m
  int32_t max_split_rows = 0;  // the most query rows (heads * s_q) of a split sequence
  int32_t rows_needed = 0;     // the largest row_begin + num_rows (q_cat / o_lat must hold it)
};

// The work split of one step, computed once on the host (PlanMlaDecode) and shared by every
// layer: `data` is uploaded once (UploadMlaDecodePlan, or any copy of its bytes) and passed as
// MlaDecodeParams::plan_data. Layout of data, all int32:
//   parts  [num_parts][5]: first sequence, its first key block, last sequence, the end block
//                          (exclusive) in it, split index of the first sequence's piece;
//   seqs   [num_seqs][6]:  row_begin, num_rows, keys, table_offset, num_splits, slot base;
//   splits [num_split_seqs]: indices of the sequences with num_splits > 1.
struct MlaDecodePlan {
  MlaDecodeSchedule schedule;
  std::vector<int32_t> data;
  size_t data_bytes() const { return data.size() * sizeof(int32_t); }
};

// Splits the sequences' key blocks (64 keys) evenly over the CTAs of a GPU with `sms`
// multiprocessors (one CTA per SM: the kernel's shared memory), FlashMLA's scheme: every part
// (a CTA per row tile) takes a contiguous run of blocks across sequences, a fixed overhead
// charged per piece, so long sequences are split over several CTAs and small batches with long
// contexts still fill the GPU. cudaErrorInvalidValue for heads < 1, sms < 1, a sequence with
// num_rows < 1, negative keys, row_begin or table_offset, or int32 overflow of rows * heads.
cudaError_t PlanMlaDecode(const MlaDecodeSequence* seqs, size_t count, int64_t heads, int sms,
                          MlaDecodePlan* plan);
#if __cplusplus >= 202002L
inline cudaError_t PlanMlaDecode(std::span<const MlaDecodeSequence> seqs, int64_t heads, int sms,
                                 MlaDecodePlan* plan) {
  return PlanMlaDecode(seqs.data(), seqs.size(), heads, sms, plan);
}
#endif

// For a CUDA graph, which fixes the launch shapes and the plan's size: pads a plan in place to
// what every step with the same sequences' row counts gets on a GPU of `sms` multiprocessors,
// whatever their key counts — the most parts (the extra ones empty), every sequence listed for
// the combine (the entries past the split ones name an added sequence of zero rows, which the
// combine skips) and workspace for the most partial results a split can make. The kernels do
// the same arithmetic as with the unpadded plan. cudaErrorInvalidValue for an empty or
// invalid plan, or one made for another `sms`.
cudaError_t PadMlaDecodePlanForGraph(int sms, MlaDecodePlan* plan);

// Copies plan.data to `device_plan` (at least plan.data_bytes()) on `stream`. The host vector
// may be reused when this returns (pageable memory is staged before the call returns).
cudaError_t UploadMlaDecodePlan(const MlaDecodePlan& plan, int32_t* device_plan,
                                cudaStream_t stream);

// Workspace for split partials: num_slots * slot_rows rows of kv_lora unnormalised F32 outputs
// plus (row max in log2 units, row sum) each. 0 when nothing is split.
size_t MlaDecodeWorkspaceBytes(const MlaDecodeSchedule& schedule, int64_t kv_lora);

struct MlaDecodeParams {
  // [rows, heads, kv_lora + rope] F32, 16-byte aligned: queries already W_UK-absorbed, RoPE'd
  // and multiplied by the softmax scale (mla_attention.cu's AbsorbQueryKernel writes them).
  const float* q_cat = nullptr;
  float* o_lat = nullptr;  // [rows, heads, kv_lora] F32, 16-byte aligned: softmax(q k^T) latents
  int64_t rows = 0;        // token rows in q_cat / o_lat
  int64_t heads = 0;       // 128 in DeepSeek-V3 (must equal schedule.heads)
  int64_t kv_lora = 0;     // 512
  int64_t rope_dim = 0;    // 64
  // This layer's first page (LatentCache::ByteOffset(layer, 0, 0) into its storage): pages of
  // page_size tokens, token_bytes apart (LatentTokenBytes). 16-byte aligned for F32 and
  // BF16, 4-byte for FP8.
  const void* cache = nullptr;
  LatentFormat format = LatentFormat::kBF16;
  int64_t page_size = 64;
  int64_t token_bytes = 0;
  const int32_t* block_tables = nullptr;  // device: concatenated block tables (physical pages)
  MlaDecodeSchedule schedule;             // the plan's scalars (host copy)
  const int32_t* plan_data = nullptr;     // device copy of the plan's data
  // MlaDecodeWorkspaceBytes(schedule, kv_lora) bytes, 16-byte aligned (null when that is 0).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Enqueues the split attention and, when the plan splits a sequence, the combine on `stream`.
// cudaErrorInvalidValue (nothing launched) for shapes out of range, token_bytes not the
// format's, a plan made for other heads or for more rows than `rows`, a workspace too small,
// misaligned or missing pointers; cudaSuccess without a launch for an empty plan; otherwise the
// launch's error. Every row of every planned sequence is written. Block tables are not checked
// on the device: the caller guarantees that every key a row sees lies in a page of its table.
// Keys no row of a CTA sees are never read (their shared-memory slots are zeroed instead).
cudaError_t LaunchMlaDecode(const MlaDecodeParams& p, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
