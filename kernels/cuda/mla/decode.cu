// The split MLA decode attention (one CTA per (row tile, part), BF16 tensor-core MMAs, online
// softmax in F32), the combine of split partials, and the host-side planner and launch checks.
//
// PTX fragment layouts relied on (PTX ISA 9.7.14.5.8, "Matrix Fragments for mma.m16n8k16 with
// floating point type"; CUTLASS's cute/atom/mma_traits_sm80.hpp encodes the same ones), with
// g = lane / 4 and t = lane % 4:
//   A (16x16, row):  reg0 = (row g,   k 2t..2t+1)   reg1 = (row g+8, k 2t..2t+1)
//                    reg2 = (row g,   k 2t+8..+9)   reg3 = (row g+8, k 2t+8..+9)
//   B (16x8, col):   reg0 = (k 2t..2t+1, col g)     reg1 = (k 2t+8..2t+9, col g)
//   C/D (16x8 F32):  c0, c1 = (row g, cols 2t, 2t+1)   c2, c3 = (row g+8, cols 2t, 2t+1)
// (the lower k or column of a pair in the lower 16 bits). ldmatrix.m8n8.x4 (PTX ISA 9.7.14.5.15):
// lanes 8i..8i+7 give the row addresses of matrix i, and register i of lane l holds matrix i's
// (row l / 4, cols 2(l % 4), +1); with .trans, (rows 2(l % 4), +1; col l / 4). So an x4 load of
// a row-major 16x16 tile (matrices: rows 0-7 | rows 8-15, times cols 0-7 | cols 8-15) is an A
// fragment; of 8 keys x 32 dims, the B fragments of two k-steps (S = Q K^T: K is B in "col"
// order as stored); and .trans of 16 keys x 16 latent columns, the B fragments of two n-tiles
// (O += P V: V is B in "row" order as stored).
#include "kernels/cuda/mla/decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cuda/ptx.cuh"

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kBlockN = kMlaDecodeBlockKeys;
// Shared-memory rows are padded to DeepSeek's shape: latent columns [0, 512), k_pe at
// [512, 576), zeros in between for smaller models, so one fragment walk serves every shape.
constexpr int kLatentCols = static_cast<int>(kMlaDecodeMaxKvLora);
constexpr int kCols = kLatentCols + static_cast<int>(kMlaDecodeMaxRope);
constexpr int kChunks = kCols / 8;  // 16-byte chunks of 8 BF16 values per row
constexpr int kLatentChunks = kLatentCols / 8;
constexpr int kRowBytes = kCols * 2;
constexpr int kPRowBytes = kBlockN * 2;
// The largest FP8 token: 512 E4M3 bytes, 4 F32 scales, 64 BF16 k_pe values.
constexpr int kMaxFp8TokenBytes = 512 + 4 * 4 + 64 * 2;
constexpr int kPartFields = 5;
constexpr int kSeqFields = 6;
constexpr int kCombineRows = kWarps;  // a warp per query row
constexpr float kLog2e = 1.4426950408889634f;

static_assert(kThreads == 4 * kBlockN, "tile loads give each key of a tile 4 threads");
static_assert(kCols % 32 == 0 && kBlockN % 16 == 0, "fragment walks need whole k-steps");

// Shared memory of one CTA. BF16 caches land in two K buffers by cp.async (one loads while the
// other is used); FP8 tokens land raw in staging buffers and are dequantised into one K buffer;
// F32 tokens are converted through registers into one K buffer. Sizes fit the 227 KB a Hopper
// CTA may opt into: BF16 with 64 rows uses 229,888 bytes.
template <LatentFormat kFormat, int kBlockM>
struct SmemLayout {
  static constexpr int kKBuffers = kFormat == LatentFormat::kBF16 ? 2 : 1;
  static constexpr int kQBytes = kBlockM * kRowBytes;
  static constexpr int kKBytes = kBlockN * kRowBytes;
  static constexpr int kStageBytes = kBlockN * kMaxFp8TokenBytes;
  static constexpr int kPBytes = kBlockM * kPRowBytes;
  static constexpr int kColGroups = kWarps / (kBlockM / 16);
  static constexpr int kRedBytes = kColGroups * kBlockM * 4;
  // FP8: two staging buffers when they fit (prefetch two tiles ahead), else one.
  static constexpr int kBaseBytes = kQBytes + kKBuffers * kKBytes + kPBytes + kRedBytes;
  static constexpr int kStages =
      kFormat != LatentFormat::kFp8 ? 0 : (kBaseBytes + 2 * kStageBytes <= 232448 ? 2 : 1);
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kQBytes;
  static constexpr int kStage = kK + kKBuffers * kKBytes;
  static constexpr int kP = kStage + kStages * kStageBytes;
  static constexpr int kRed = kP + kPBytes;
  static constexpr int kTotal = kRed + kRedBytes;
  static_assert(kTotal <= 232448, "over the 227 KB of shared memory a Hopper CTA may use");
  static_assert(kK % 128 == 0 && kStage % 16 == 0 && kP % 128 == 0 && kRed % 16 == 0,
                "aligned sections");
};

struct DecodeArgs {
  const float* q_cat;
  float* o_lat;
  const uint8_t* cache;
  const int32_t* block_tables;
  const int32_t* parts;
  const int32_t* seqs;
  const int32_t* split_seqs;
  float* partial_o;    // [num_slots * slot_rows, kv_lora]
  float2* partial_ml;  // [num_slots * slot_rows]: (row max in log2 units, row sum)
  int heads, kv_lora, rope, page_size, token_bytes, stage_stride, slot_rows, fp8_groups;
  bool fp8_copy16;  // FP8 tokens copied in 16-byte pieces (else 4-byte: token_bytes % 16 != 0)
};

// ---- PTX wrappers (the shared ones are in ../ptx.cuh) ---------------------------------------

__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src));
}

// ---- Small helpers ------------------------------------------------------------------------


// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of kRowBytesT-byte rows. The
// chunk index is XORed with row % 8 so the 8 rows an ldmatrix phase reads (same logical chunk)
// fall in 8 different bank groups: rows are a multiple of 128 bytes apart, which without the
// swizzle would put all 8 in the same banks.
template <int kRowBytesT>
__device__ __forceinline__ uint32_t Swizzled(int row, int chunk) {
  return static_cast<uint32_t>(row * kRowBytesT + ((chunk ^ (row & 7)) << 4));
}

// Where chunk c of a padded shared-memory row comes from in the token's [latent | rope] values:
// its first value's index, or -1 for padding (kv_lora < 512 or rope < 64).
__device__ __forceinline__ int ChunkSource(int c, int kv_lora, int rope) {
  if (c < kLatentChunks) return c * 8 < kv_lora ? c * 8 : -1;
  const int r = (c - kLatentChunks) * 8;
  return r < rope ? kv_lora + r : -1;
}

__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// One sequence's share of a part, as one CTA sees it.
struct Segment {
  int row_begin, num_rows, keys, table_offset, num_splits, slot_base;
  int block_begin, block_end, split;
};

// ---- The attention kernel -----------------------------------------------------------------

// One CTA: kBlockM query rows (row m = token * heads + head of one sequence, so every K tile
// loaded serves all heads and tokens of the tile) over the key blocks of its part, 8 warps.
// Warp (rg, cg): rows [16 rg, +16) of the tile; for S = Q K^T its keys [kWarpKeys cg, +kWarpKeys)
// of each 64-key tile, for O += P V its latent columns [kWarpCols cg, +kWarpCols). The warps of
// a row group share each row's running max (exchanged through shared memory per tile) and keep
// partial row sums, added at the end; P goes through shared memory (BF16) because a warp's PV
// needs all 64 keys of its rows. Per tile: (1) tile ready, (2) S, mask, row maxes exchanged,
// (3) P written, O rescaled, (4) O += P V; three barriers (four for FP8: dequantisation).
template <LatentFormat kFormat, int kBlockM>
class DecodeCta {
 public:
  using Layout = SmemLayout<kFormat, kBlockM>;
  static constexpr int kRowGroups = kBlockM / 16;
  static constexpr int kColGroups = kWarps / kRowGroups;
  static constexpr int kWarpKeys = kBlockN / kColGroups;
  static constexpr int kSTiles = kWarpKeys / 8;
  static constexpr int kWarpCols = kLatentCols / kColGroups;
  static constexpr int kOTiles = kWarpCols / 8;
  static_assert(kRowGroups * kColGroups == kWarps && kSTiles >= 1 && kOTiles % 2 == 0,
                "warp tiling");

  __device__ DecodeCta(const DecodeArgs& args, uint8_t* smem)
      : a_(args),
        smem_(smem),
        s_base_(SmemAddress(smem)),
        red_(reinterpret_cast<float*>(smem + Layout::kRed)),
        tid_(static_cast<int>(threadIdx.x)),
        lane_(tid_ % 32),
        rg_((tid_ / 32) / kColGroups),
        cg_((tid_ / 32) % kColGroups),
        g_(lane_ / 4),
        t_(lane_ % 4),
        swz_(lane_ & 7) {}

  __device__ void Run(const Segment& seg, int m0) {
    __syncthreads();  // the previous segment's warps are done with every buffer
    seg_ = seg;
    m0_ = m0;
    rows_ = seg.num_rows * a_.heads;
    LoadQ();
    // Row r of this thread (its rows g and g + 8 of the row group) sees keys [0, limit_[r]).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int m = m0 + rg_ * 16 + g_ + 8 * r;
      limit_[r] = m < rows_ ? seg.keys - seg.num_rows + m / a_.heads + 1 : 0;
      row_max_[r] = -INFINITY;
      row_sum_[r] = 0.0f;
    }
    // Keys the CTA's last row sees; the others are never read (zeros land instead).
    const int last = min(rows_, m0 + kBlockM) - 1;
    cta_keys_ = min(seg.keys, max(0, seg.keys - seg.num_rows + last / a_.heads + 1));
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) o_[n][i] = 0.0f;
    }

    const int begin = seg.block_begin;
    const int end = min(seg.block_end, (cta_keys_ + kBlockN - 1) / kBlockN);
    const int tiles = max(0, end - begin);
    if constexpr (kFormat == LatentFormat::kBF16) {
      if (tiles > 0) IssueBf16(begin, 0);
      for (int i = 0; i < tiles; ++i) {
        CpAsyncWait<0>();
        __syncthreads();  // tile i visible; every warp is done with tile i - 1's buffer
        if (i + 1 < tiles) IssueBf16(begin + i + 1, (i + 1) & 1);
        Compute(begin + i, Layout::kK + (i & 1) * Layout::kKBytes);
      }
    } else if constexpr (kFormat == LatentFormat::kFp8) {
      // One commit group per staged tile (empty past the end), so "tile i has landed" is
      // always "at most kStages - 1 groups pending".
      for (int s = 0; s < Layout::kStages; ++s) IssueFp8(s < tiles ? begin + s : -1, s);
      for (int i = 0; i < tiles; ++i) {
        const int stage = i % Layout::kStages;
        CpAsyncWait<Layout::kStages - 1>();
        __syncthreads();  // tile i's bytes visible; every warp is done with the K buffer
        DequantizeFp8(begin + i, stage);
        __syncthreads();  // K buffer ready; the staging buffer is free again
        IssueFp8(i + Layout::kStages < tiles ? begin + i + Layout::kStages : -1, stage);
        Compute(begin + i, Layout::kK);
      }
    } else {
      for (int i = 0; i < tiles; ++i) {
        __syncthreads();  // every warp is done with the K buffer
        LoadF32(begin + i);
        __syncthreads();
        Compute(begin + i, Layout::kK);
      }
    }
    Finish();
  }

 private:
  // Query rows [m0, m0 + kBlockM) of the sequence, F32 -> BF16 (rounded), padded with zeros.
  __device__ void LoadQ() {
    const int dim = a_.kv_lora + a_.rope;
    const int64_t q_row0 = static_cast<int64_t>(seg_.row_begin) * a_.heads + m0_;
    for (int i = tid_; i < kBlockM * kChunks; i += kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      const int col = ChunkSource(c, a_.kv_lora, a_.rope);
      uint4 v = make_uint4(0, 0, 0, 0);
      if (m0_ + r < rows_ && col >= 0) {
        const float4* src = reinterpret_cast<const float4*>(a_.q_cat + (q_row0 + r) * dim + col);
        const float4 x = __ldg(src), y = __ldg(src + 1);
        v = make_uint4(PackBf16(x.x, x.y), PackBf16(x.z, x.w), PackBf16(y.x, y.y),
                       PackBf16(y.z, y.w));
      }
      *reinterpret_cast<uint4*>(smem_ + Layout::kQ + Swizzled<kRowBytes>(r, c)) = v;
    }
  }

  // This thread's key of a tile (4 threads per key): its token's bytes, or null when no row of
  // the CTA sees it. Only then is the block table read, so pages past the sequence's stay
  // untouched.
  __device__ const uint8_t* TokenOf(int tile) const {
    const int key = tile * kBlockN + tid_ / 4;
    if (key >= cta_keys_) return nullptr;
    const int page = a_.block_tables[seg_.table_offset + key / a_.page_size];
    const int64_t slot = static_cast<int64_t>(page) * a_.page_size + key % a_.page_size;
    return a_.cache + slot * a_.token_bytes;
  }

  __device__ void IssueBf16(int tile, int buffer) {
    const uint8_t* token = TokenOf(tile);
    const int row = tid_ / 4;
    const uint32_t dst = s_base_ + Layout::kK + buffer * Layout::kKBytes;
#pragma unroll 1
    for (int c = tid_ % 4; c < kChunks; c += 4) {
      const int col = ChunkSource(c, a_.kv_lora, a_.rope);
      const bool fill = token != nullptr && col >= 0;
      CpAsync16(dst + Swizzled<kRowBytes>(row, c), fill ? token + 2 * col : a_.cache,
                fill ? 16 : 0);
    }
    CpAsyncCommit();
  }

  // Raw FP8 token bytes into staging buffer `stage` (tile < 0: an empty group).
  __device__ void IssueFp8(int tile, int stage) {
    const uint8_t* token = tile >= 0 ? TokenOf(tile) : nullptr;
    if (token != nullptr) {
      const uint32_t dst = s_base_ + Layout::kStage + stage * Layout::kStageBytes +
                           (tid_ / 4) * a_.stage_stride;
      if (a_.fp8_copy16) {
        for (int j = tid_ % 4; j < a_.token_bytes / 16; j += 4) {
          CpAsync16(dst + 16 * j, token + 16 * j, 16);
        }
      } else {
        for (int j = tid_ % 4; j < a_.token_bytes / 4; j += 4) CpAsync4(dst + 4 * j, token + 4 * j);
      }
    }
    CpAsyncCommit();
  }

  // Staged FP8 tokens -> BF16 K rows: latent value = E4M3 * its group's scale (F32, the product
  // the CPU forms), rounded to BF16; k_pe copied. Keys no row sees become zeros.
  __device__ void DequantizeFp8(int tile, int stage) {
    const int row = tid_ / 4;
    const bool valid = tile * kBlockN + row < cta_keys_;
    const uint8_t* token =
        smem_ + Layout::kStage + stage * Layout::kStageBytes + row * a_.stage_stride;
    uint8_t* dst = smem_ + Layout::kK;
#pragma unroll 1
    for (int c = tid_ % 4; c < kChunks; c += 4) {
      const int col = valid ? ChunkSource(c, a_.kv_lora, a_.rope) : -1;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (col >= 0 && c < kLatentChunks) {
        const uint2 raw = *reinterpret_cast<const uint2*>(token + col);
        const float scale = *reinterpret_cast<const float*>(token + a_.kv_lora + (col / 128) * 4);
        uint32_t out[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t word = i < 2 ? raw.x : raw.y;
          const __nv_fp8x2_storage_t pair =
              static_cast<__nv_fp8x2_storage_t>((word >> (16 * (i & 1))) & 0xFFFFu);
          const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
          out[i] = PackBf16(f.x * scale, f.y * scale);
        }
        v = make_uint4(out[0], out[1], out[2], out[3]);
      } else if (col >= 0) {
        // k_pe after the scales: 4-byte aligned only (kv_lora + 4 * groups).
        const uint32_t* pe = reinterpret_cast<const uint32_t*>(
            token + a_.kv_lora + 4 * a_.fp8_groups + 2 * (col - a_.kv_lora));
        v = make_uint4(pe[0], pe[1], pe[2], pe[3]);
      }
      *reinterpret_cast<uint4*>(dst + Swizzled<kRowBytes>(row, c)) = v;
    }
  }

  __device__ void LoadF32(int tile) {
    const float* token = reinterpret_cast<const float*>(TokenOf(tile));
    const int row = tid_ / 4;
    uint8_t* dst = smem_ + Layout::kK;
#pragma unroll 1
    for (int c = tid_ % 4; c < kChunks; c += 4) {
      const int col = token != nullptr ? ChunkSource(c, a_.kv_lora, a_.rope) : -1;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (col >= 0) {
        const float4 x = __ldg(reinterpret_cast<const float4*>(token + col));
        const float4 y = __ldg(reinterpret_cast<const float4*>(token + col + 4));
        v = make_uint4(PackBf16(x.x, x.y), PackBf16(x.z, x.w), PackBf16(y.x, y.y),
                       PackBf16(y.z, y.w));
      }
      *reinterpret_cast<uint4*>(dst + Swizzled<kRowBytes>(row, c)) = v;
    }
  }

  // One 64-key tile already in the K buffer at byte offset `k_offset`.
  __device__ void Compute(int tile, int k_offset) {
    // S = Q K^T over the 576 padded dims: 18 steps of 32 dims (two MMA k-steps).
    float s[kSTiles][4];
#pragma unroll
    for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[n][i] = 0.0f;
    }
    // A: lanes 0-15 address rows 0-15 at the step's first chunk, lanes 16-31 the second.
    const uint32_t q_row = s_base_ + Layout::kQ + (rg_ * 16 + (lane_ & 15)) * kRowBytes;
    const int q_chunk = lane_ >> 4;
    // B: lanes 8i..8i+7 address the n-tile's 8 keys at the step pair's chunk i.
    const uint32_t k_row = s_base_ + k_offset + (cg_ * kWarpKeys + (lane_ & 7)) * kRowBytes;
    const int k_chunk = lane_ >> 3;
#pragma unroll 2
    for (int step = 0; step < kCols / 32; ++step) {
      uint32_t a0[4], a1[4];
      LdMatrixX4(a0, q_row + (((4 * step + q_chunk) ^ swz_) << 4));
      LdMatrixX4(a1, q_row + (((4 * step + 2 + q_chunk) ^ swz_) << 4));
#pragma unroll
      for (int n = 0; n < kSTiles; ++n) {
        uint32_t b[4];
        LdMatrixX4(b, k_row + n * 8 * kRowBytes + (((4 * step + k_chunk) ^ swz_) << 4));
        Mma(s[n], a0, b[0], b[1]);
        Mma(s[n], a1, b[2], b[3]);
      }
    }

    // Causal mask (selected, never multiplied: a masked score is -inf whatever the key held),
    // scores to log2 units, and the row maxes over this warp's keys.
    const int key0 = tile * kBlockN + cg_ * kWarpKeys + 2 * t_;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = i >> 1;
        const int key = key0 + n * 8 + (i & 1);
        s[n][i] = key < limit_[r] ? s[n][i] * kLog2e : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[n][i]);
      }
    }
    const int row = rg_ * 16 + g_;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = QuadMax(tile_max[r]);
      if (t_ == 0) red_[cg_ * kBlockM + row + 8 * r] = tile_max[r];
    }
    __syncthreads();

    // Online softmax: every warp of the row group reads the same maxes, so all keep the same
    // running max bit for bit. A row with no visible key yet keeps max -inf and exponentiates
    // against 0 instead (exp2(-inf) = 0, never -inf - -inf).
    float base[2], rescale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m = row_max_[r];
      for (int c = 0; c < kColGroups; ++c) m = fmaxf(m, red_[c * kBlockM + row + 8 * r]);
      base[r] = m == -INFINITY ? 0.0f : m;
      rescale[r] = exp2f(row_max_[r] - base[r]);
      row_max_[r] = m;
      row_sum_[r] *= rescale[r];
    }
    uint8_t* p_tile = smem_ + Layout::kP;
#pragma unroll
    for (int n = 0; n < kSTiles; ++n) {
      const float p0 = exp2f(s[n][0] - base[0]), p1 = exp2f(s[n][1] - base[0]);
      const float p2 = exp2f(s[n][2] - base[1]), p3 = exp2f(s[n][3] - base[1]);
      row_sum_[0] += p0 + p1;
      row_sum_[1] += p2 + p3;
      const int chunk = cg_ * kSTiles + n;
      *reinterpret_cast<uint32_t*>(p_tile + Swizzled<kPRowBytes>(row, chunk) + 4 * t_) =
          PackBf16(p0, p1);
      *reinterpret_cast<uint32_t*>(p_tile + Swizzled<kPRowBytes>(row + 8, chunk) + 4 * t_) =
          PackBf16(p2, p3);
    }
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      o_[n][0] *= rescale[0];
      o_[n][1] *= rescale[0];
      o_[n][2] *= rescale[1];
      o_[n][3] *= rescale[1];
    }
    __syncthreads();

    // O += P V: 4 k-steps of 16 keys; V's B fragments by transposed loads, two n-tiles each.
    const uint32_t p_row = s_base_ + Layout::kP + (rg_ * 16 + (lane_ & 15)) * kPRowBytes;
    const uint32_t v_row = s_base_ + k_offset + (lane_ & 15) * kRowBytes;
    const int chunk_add = lane_ >> 4;
#pragma unroll 1
    for (int step = 0; step < kBlockN / 16; ++step) {
      uint32_t pa[4];
      LdMatrixX4(pa, p_row + (((2 * step + chunk_add) ^ swz_) << 4));
#pragma unroll
      for (int n = 0; n < kOTiles; n += 2) {
        uint32_t b[4];
        LdMatrixX4Trans(b, v_row + step * 16 * kRowBytes +
                               (((cg_ * kOTiles + n + chunk_add) ^ swz_) << 4));
        Mma(o_[n], pa, b[0], b[1]);
        Mma(o_[n + 1], pa, b[2], b[3]);
      }
    }
  }

  // Row sums of the row group added up; then o_lat (normalised) when the sequence is not split,
  // else the unnormalised partial with its (max, sum) for the combine.
  __device__ void Finish() {
    const int row = rg_ * 16 + g_;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_sum_[r] = QuadSum(row_sum_[r]);
      if (t_ == 0) red_[cg_ * kBlockM + row + 8 * r] = row_sum_[r];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float total = 0.0f;
      for (int c = 0; c < kColGroups; ++c) total += red_[c * kBlockM + row + 8 * r];
      const int m = m0_ + row + 8 * r;
      if (m >= rows_) continue;
      float* dst;
      float scale = 1.0f;
      if (seg_.num_splits == 1) {
        dst = a_.o_lat + (static_cast<int64_t>(seg_.row_begin) * a_.heads + m) * a_.kv_lora;
        scale = total > 0.0f ? 1.0f / total : 0.0f;
      } else {
        const int64_t slot_row =
            static_cast<int64_t>(seg_.slot_base + seg_.split) * a_.slot_rows + m;
        dst = a_.partial_o + slot_row * a_.kv_lora;
        if (cg_ == 0 && t_ == 0) a_.partial_ml[slot_row] = make_float2(row_max_[r], total);
      }
#pragma unroll
      for (int n = 0; n < kOTiles; ++n) {
        const int col = cg_ * kWarpCols + n * 8 + 2 * t_;
        if (col < a_.kv_lora) {
          *reinterpret_cast<float2*>(dst + col) =
              make_float2(o_[n][2 * r] * scale, o_[n][2 * r + 1] * scale);
        }
      }
    }
  }

  const DecodeArgs& a_;
  uint8_t* const smem_;
  const uint32_t s_base_;
  float* const red_;  // [kColGroups][kBlockM]: row maxes per tile, then row sums
  const int tid_, lane_, rg_, cg_, g_, t_, swz_;
  Segment seg_;
  int m0_ = 0, rows_ = 0, cta_keys_ = 0;
  int limit_[2];
  float row_max_[2], row_sum_[2];
  float o_[kOTiles][4];
};

// Grid (m_blocks, num_parts): CTA (mb, part) takes row tile mb of every sequence in its part's
// key range, so the CTAs of one part read the same pages at about the same time (L2 reuse).
template <LatentFormat kFormat, int kBlockM>
__global__ void __launch_bounds__(kThreads, 1)
    DecodeKernel(const __grid_constant__ DecodeArgs args) {
  extern __shared__ __align__(128) uint8_t smem[];
  DecodeCta<kFormat, kBlockM> cta(args, smem);
  const int32_t* part = args.parts + blockIdx.y * kPartFields;
  const int first = part[0], first_block = part[1], last = part[2], last_end = part[3];
  const int m0 = static_cast<int>(blockIdx.x) * kBlockM;
  for (int s = first; s <= last; ++s) {
    const int32_t* q = args.seqs + s * kSeqFields;
    Segment seg;
    seg.row_begin = q[0];
    seg.num_rows = q[1];
    seg.keys = q[2];
    seg.table_offset = q[3];
    seg.num_splits = q[4];
    seg.slot_base = q[5];
    if (m0 >= seg.num_rows * args.heads) continue;  // CTA-uniform: this sequence has fewer rows
    seg.block_begin = s == first ? first_block : 0;
    seg.block_end = s == last ? last_end : max(1, (seg.keys + kBlockN - 1) / kBlockN);
    seg.split = s == first ? part[4] : 0;
    cta.Run(seg, m0);
  }
}

// Grid (num_split_seqs, ceil(max_split_rows / 8)), a warp per query row: the splits' partials
// weighted by exp2(max_s - max) and divided by the weighted sum of their row sums. Splits that
// saw no key (max -inf) weigh 0; a row with no key at all gets zeros.
__global__ void __launch_bounds__(kThreads)
    CombineKernel(const __grid_constant__ DecodeArgs args) {
  const int s = args.split_seqs[blockIdx.x];
  const int32_t* q = args.seqs + s * kSeqFields;
  const int m = static_cast<int>(blockIdx.y) * kCombineRows + static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (m >= q[1] * args.heads) return;  // warp-uniform; no barriers below
  const int splits = q[4];
  const float2* ml = args.partial_ml + static_cast<int64_t>(q[5]) * args.slot_rows + m;
  float mx = -INFINITY;
  for (int k = lane; k < splits; k += 32) {
    mx = fmaxf(mx, ml[static_cast<int64_t>(k) * args.slot_rows].x);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
  }
  float total = 0.0f;
  for (int k = lane; k < splits; k += 32) {
    const float2 v = ml[static_cast<int64_t>(k) * args.slot_rows];
    if (v.x != -INFINITY) total += v.y * exp2f(v.x - mx);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  constexpr int kPerLane = kLatentCols / 4 / 32;
  const int vec = args.kv_lora / 4;
  float4 acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int k = 0; k < splits; ++k) {
    const int64_t slot_row = (static_cast<int64_t>(q[5]) + k) * args.slot_rows + m;
    const float2 v = args.partial_ml[slot_row];
    const float w = v.x == -INFINITY ? 0.0f : exp2f(v.x - mx) * inv;
    const float4* src = reinterpret_cast<const float4*>(args.partial_o + slot_row * args.kv_lora);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int c = lane + 32 * j;
      if (c < vec) {
        const float4 x = src[c];
        acc[j].x += w * x.x;
        acc[j].y += w * x.y;
        acc[j].z += w * x.z;
        acc[j].w += w * x.w;
      }
    }
  }
  float4* dst = reinterpret_cast<float4*>(
      args.o_lat + (static_cast<int64_t>(q[0]) * args.heads + m) * args.kv_lora);
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int c = lane + 32 * j;
    if (c < vec) dst[c] = acc[j];
  }
}

// ---- Host side ----------------------------------------------------------------------------

// Key-block equivalents one piece costs besides its blocks (loading its queries, writing its
// outputs, and the combine when split), so the planner prefers fewer, longer pieces.
int PieceOverhead(int block_m) { return 1 + block_m / 16; }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One greedy pass of the planner with parts of at most `payload` cost: *parts gets kPartFields
// values per part, *splits each sequence's piece count. False when it needs over max_parts.
bool WalkParts(const std::vector<int64_t>& blocks, int64_t overhead, int64_t payload,
               int max_parts, std::vector<int32_t>* parts, std::vector<int32_t>* splits) {
  const int n = static_cast<int>(blocks.size());
  parts->clear();
  splits->assign(n, 0);
  int seq = 0;
  int64_t block = 0;
  while (seq < n) {
    if (static_cast<int64_t>(parts->size()) >= static_cast<int64_t>(max_parts) * kPartFields) {
      return false;
    }
    const int first = seq;
    const int64_t first_block = block;
    const int32_t first_split = (*splits)[seq];
    int64_t budget = payload;
    int last = seq;
    int64_t last_end = 0;
    while (seq < n) {
      const int64_t remaining = blocks[seq] - block;
      if (remaining + overhead <= budget) {
        budget -= remaining + overhead;
        ++(*splits)[seq];
        last = seq;
        last_end = blocks[seq];
        ++seq;
        block = 0;
        continue;
      }
      if (budget - overhead > 0) {  // a piece of this sequence; the next part continues it
        block += budget - overhead;
        ++(*splits)[seq];
        last = seq;
        last_end = block;
      }
      break;
    }
    if (last_end == 0) return false;  // payload <= overhead: nothing fits
    parts->insert(parts->end(), {first, static_cast<int32_t>(first_block), last,
                                 static_cast<int32_t>(last_end), first_split});
  }
  return true;
}

template <LatentFormat kFormat, int kBlockM>
cudaError_t LaunchDecode(const DecodeArgs& args, const MlaDecodeSchedule& s,
                         cudaStream_t stream) {
  const auto kernel = DecodeKernel<kFormat, kBlockM>;
  constexpr int kSmem = SmemLayout<kFormat, kBlockM>::kTotal;
  // Above 48 KB a kernel must opt in; cheap enough to repeat per launch (and per device).
  if (const cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      e != cudaSuccess) {
    return e;
  }
  const dim3 grid(static_cast<unsigned>(s.m_blocks), static_cast<unsigned>(s.num_parts));
  kernel<<<grid, kThreads, kSmem, stream>>>(args);
  return cudaGetLastError();
}

template <LatentFormat kFormat>
cudaError_t LaunchForFormat(const DecodeArgs& args, const MlaDecodeSchedule& s,
                            cudaStream_t stream) {
  switch (s.block_m) {
    case 16: return LaunchDecode<kFormat, 16>(args, s, stream);
    case 32: return LaunchDecode<kFormat, 32>(args, s, stream);
    default: return LaunchDecode<kFormat, 64>(args, s, stream);
  }
}

bool Aligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

bool ValidSchedule(const MlaDecodeSchedule& s) {
  if (s.block_m != 16 && s.block_m != 32 && s.block_m != 64) return false;
  if (s.heads < 1 || s.num_seqs < 0 || s.num_parts < 0 || s.num_parts > 65535) return false;
  if (s.num_seqs > 0 && (s.m_blocks < 1 || s.num_parts < 1)) return false;
  if (s.num_split_seqs < 0 || s.num_split_seqs > s.num_seqs || s.num_slots < 0) return false;
  if (s.slot_rows != s.m_blocks * s.block_m || s.max_split_rows < 0) return false;
  if (s.num_split_seqs > 0 && (s.num_slots < 2 || s.max_split_rows < 1)) return false;
  return s.rows_needed >= 0;
}

}  // namespace

cudaError_t PlanMlaDecode(const MlaDecodeSequence* seqs, size_t count, int64_t heads, int sms,
                          MlaDecodePlan* plan) {
  if (plan == nullptr || heads < 1 || heads > std::numeric_limits<int32_t>::max() || sms < 1 ||
      (count > 0 && seqs == nullptr) ||
      count > static_cast<size_t>(std::numeric_limits<int32_t>::max() / kSeqFields)) {
    return cudaErrorInvalidValue;
  }
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  const int n = static_cast<int>(count);
  int64_t max_rows = 0, rows_needed = 0;
  for (int i = 0; i < n; ++i) {
    const MlaDecodeSequence& q = seqs[i];
    if (q.num_rows < 1 || q.keys < 0 || q.row_begin < 0 || q.table_offset < 0) {
      return cudaErrorInvalidValue;
    }
    const int64_t end = static_cast<int64_t>(q.row_begin) + q.num_rows;
    if (static_cast<int64_t>(q.num_rows) * heads > kInt32Max || end * heads > kInt32Max) {
      return cudaErrorInvalidValue;
    }
    max_rows = std::max(max_rows, static_cast<int64_t>(q.num_rows) * heads);
    rows_needed = std::max(rows_needed, end);
  }

  MlaDecodeSchedule s;
  s.heads = static_cast<int32_t>(heads);
  s.num_seqs = n;
  s.block_m = max_rows <= 16 ? 16 : (max_rows <= 32 ? 32 : 64);
  s.m_blocks = static_cast<int32_t>(CeilDiv(max_rows, s.block_m));
  s.slot_rows = s.m_blocks * s.block_m;
  s.rows_needed = static_cast<int32_t>(rows_needed);
  plan->data.clear();
  if (n == 0) {
    s.m_blocks = 0;
    s.slot_rows = 0;
    plan->schedule = s;
    return cudaSuccess;
  }

  // FlashMLA's balance: a sequence costs its blocks plus an overhead per piece; every part gets
  // the same payload and takes whole sequences while they fit, then as much of the next one as
  // the payload allows. The payload is the smallest that needs at most max_parts parts.
  const int64_t overhead = PieceOverhead(s.block_m);
  const int max_parts = std::min(65535, std::max(1, sms / s.m_blocks));
  std::vector<int64_t> blocks(n);
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    blocks[i] = std::max<int64_t>(1, CeilDiv(seqs[i].keys, kBlockN));
    total += blocks[i] + overhead;
  }
  std::vector<int32_t> parts, splits;
  int64_t lo = std::max(overhead + 1, CeilDiv(total, max_parts)), hi = total;  // hi: one part
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (WalkParts(blocks, overhead, mid, max_parts, &parts, &splits)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  // The walk is not strictly monotone in the payload; step up from the search's answer.
  while (!WalkParts(blocks, overhead, lo, max_parts, &parts, &splits)) ++lo;

  s.num_parts = static_cast<int32_t>(parts.size() / kPartFields);
  plan->data = std::move(parts);
  std::vector<int32_t> split_seqs;
  int64_t slots = 0;
  int64_t max_split_rows = 0;
  for (int i = 0; i < n; ++i) {
    const MlaDecodeSequence& q = seqs[i];
    int32_t base = 0;
    if (splits[i] > 1) {
      base = static_cast<int32_t>(slots);
      slots += splits[i];
      split_seqs.push_back(i);
      max_split_rows = std::max(max_split_rows, static_cast<int64_t>(q.num_rows) * heads);
    }
    plan->data.insert(plan->data.end(),
                      {q.row_begin, q.num_rows, q.keys, q.table_offset, splits[i], base});
  }
  plan->data.insert(plan->data.end(), split_seqs.begin(), split_seqs.end());
  s.num_split_seqs = static_cast<int32_t>(split_seqs.size());
  s.num_slots = static_cast<int32_t>(slots);
  s.max_split_rows = static_cast<int32_t>(max_split_rows);
  plan->schedule = s;
  return cudaSuccess;
}

cudaError_t PadMlaDecodePlanForGraph(int sms, MlaDecodePlan* plan) {
  if (plan == nullptr || sms < 1) return cudaErrorInvalidValue;
  MlaDecodeSchedule& s = plan->schedule;
  if (!ValidSchedule(s) || s.num_seqs < 1) return cudaErrorInvalidValue;
  const int n = s.num_seqs;
  const int max_parts = std::min(65535, std::max(1, sms / s.m_blocks));
  const size_t expected = static_cast<size_t>(s.num_parts) * kPartFields +
                          static_cast<size_t>(n) * kSeqFields + s.num_split_seqs;
  if (s.num_parts > max_parts || plan->data.size() != expected) return cudaErrorInvalidValue;
  const auto parts_end = plan->data.begin() + static_cast<ptrdiff_t>(s.num_parts) * kPartFields;
  const auto seqs_end = parts_end + static_cast<ptrdiff_t>(n) * kSeqFields;
  std::vector<int32_t> data(plan->data.begin(), parts_end);
  // An empty part: its first sequence comes after its last.
  for (int p = s.num_parts; p < max_parts; ++p) data.insert(data.end(), {1, 0, 0, 0, 0});
  data.insert(data.end(), parts_end, seqs_end);
  int64_t max_rows = 0;
  for (auto q = parts_end; q != seqs_end; q += kSeqFields) {
    max_rows = std::max<int64_t>(max_rows, static_cast<int64_t>(q[1]) * s.heads);
  }
  data.insert(data.end(), {0, 0, 0, 0, 0, 0});  // sequence n: no rows
  data.insert(data.end(), seqs_end, plan->data.end());
  for (int i = s.num_split_seqs; i < n; ++i) data.push_back(n);
  plan->data = std::move(data);
  // A piece starts at each sequence and at each part boundary inside one: at most
  // n + max_parts - 1 pieces, so as many slots at most.
  s.num_parts = max_parts;
  s.num_seqs = n + 1;
  s.num_split_seqs = n;
  s.num_slots = n + max_parts;
  s.max_split_rows = static_cast<int32_t>(max_rows);
  return cudaSuccess;
}

cudaError_t UploadMlaDecodePlan(const MlaDecodePlan& plan, int32_t* device_plan,
                                cudaStream_t stream) {
  if (plan.data.empty()) return cudaSuccess;
  if (device_plan == nullptr) return cudaErrorInvalidValue;
  return cudaMemcpyAsync(device_plan, plan.data.data(), plan.data_bytes(),
                         cudaMemcpyHostToDevice, stream);
}

size_t MlaDecodeWorkspaceBytes(const MlaDecodeSchedule& schedule, int64_t kv_lora) {
  if (schedule.num_slots <= 0 || kv_lora <= 0) return 0;
  const size_t rows = static_cast<size_t>(schedule.num_slots) * schedule.slot_rows;
  return rows * static_cast<size_t>(kv_lora) * sizeof(float) + rows * sizeof(float2);
}

cudaError_t LaunchMlaDecode(const MlaDecodeParams& p, cudaStream_t stream) {
  const MlaDecodeSchedule& s = p.schedule;
  if (!ValidSchedule(s) || p.heads != s.heads || p.rows < s.rows_needed) {
    return cudaErrorInvalidValue;
  }
  if (p.kv_lora < 16 || p.kv_lora > kMlaDecodeMaxKvLora || p.kv_lora % 16 != 0 ||
      p.rope_dim < 0 || p.rope_dim > kMlaDecodeMaxRope || p.rope_dim % 16 != 0 ||
      p.page_size < 1 || p.page_size > std::numeric_limits<int32_t>::max()) {
    return cudaErrorInvalidValue;
  }
  if (p.format != LatentFormat::kF32 && p.format != LatentFormat::kBF16 &&
      p.format != LatentFormat::kFp8) {
    return cudaErrorInvalidValue;
  }
  if (p.token_bytes != LatentTokenBytes(p.format, p.kv_lora, p.rope_dim)) {
    return cudaErrorInvalidValue;
  }
  if (s.num_seqs == 0) return cudaSuccess;
  const size_t workspace = MlaDecodeWorkspaceBytes(s, p.kv_lora);
  if (p.q_cat == nullptr || p.o_lat == nullptr || p.cache == nullptr ||
      p.block_tables == nullptr || p.plan_data == nullptr ||
      (workspace > 0 && (p.workspace == nullptr || p.workspace_bytes < workspace))) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned(p.q_cat, 16) || !Aligned(p.o_lat, 16) || !Aligned(p.workspace, 16) ||
      !Aligned(p.cache, p.format == LatentFormat::kFp8 ? 4 : 16)) {
    return cudaErrorInvalidValue;
  }

  DecodeArgs args;
  args.q_cat = p.q_cat;
  args.o_lat = p.o_lat;
  args.cache = static_cast<const uint8_t*>(p.cache);
  args.block_tables = p.block_tables;
  args.parts = p.plan_data;
  args.seqs = p.plan_data + static_cast<size_t>(s.num_parts) * kPartFields;
  args.split_seqs = args.seqs + static_cast<size_t>(s.num_seqs) * kSeqFields;
  args.partial_o = static_cast<float*>(p.workspace);
  args.partial_ml = workspace > 0 ? reinterpret_cast<float2*>(
                                        args.partial_o + static_cast<size_t>(s.num_slots) *
                                                             s.slot_rows * p.kv_lora)
                                  : nullptr;
  args.heads = s.heads;
  args.kv_lora = static_cast<int>(p.kv_lora);
  args.rope = static_cast<int>(p.rope_dim);
  args.page_size = static_cast<int>(p.page_size);
  args.token_bytes = static_cast<int>(p.token_bytes);
  args.stage_stride = static_cast<int>(CeilDiv(p.token_bytes, 16) * 16);
  args.slot_rows = s.slot_rows;
  args.fp8_groups = static_cast<int>(CeilDiv(p.kv_lora, 128));
  args.fp8_copy16 = p.token_bytes % 16 == 0 && Aligned(p.cache, 16);

  cudaError_t e = cudaSuccess;
  switch (p.format) {
    case LatentFormat::kF32: e = LaunchForFormat<LatentFormat::kF32>(args, s, stream); break;
    case LatentFormat::kBF16: e = LaunchForFormat<LatentFormat::kBF16>(args, s, stream); break;
    case LatentFormat::kFp8: e = LaunchForFormat<LatentFormat::kFp8>(args, s, stream); break;
  }
  if (e != cudaSuccess || s.num_split_seqs == 0) return e;
  const dim3 grid(static_cast<unsigned>(s.num_split_seqs),
                  static_cast<unsigned>(CeilDiv(s.max_split_rows, kCombineRows)));
  CombineKernel<<<grid, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
