// Three kernels on one stream: the query absorption (q_cat into the workspace), the attention
// over the paged latents (one block per (row, head), normalised latent output into the
// workspace) and the value projection (out). F32 arithmetic throughout.
#include "kernels/cuda/mla_attention.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/latent_format.cuh"
#include "kernels/cuda/weight_view.cuh"

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Rows of one head the two projection kernels carry at once: every kv_b element they read
// serves this many rows (a prefill chunk reads each head's W_UK and W_UV rows / kRowTile times).
constexpr int kRowTile = 8;
constexpr int kMaxTokenDim = static_cast<int>(kMlaMaxKvLora + kMlaMaxRopeDim);
// A cached token is spread over a warp as lane + 32 * k: each lane scores, and accumulates the
// latent of, at most this many values, held in registers.
constexpr int kTokenPerLane = kMaxTokenDim / 32;
constexpr int kLatentPerLane = static_cast<int>(kMlaMaxKvLora) / 32;
static_assert(kMaxTokenDim % 32 == 0 && kMlaMaxKvLora % 32 == 0, "lanes must tile a token");

// kv_b element (r, c) as F32: the stored value times, for FP8, its block's scale (the product
// the CPU backend forms). Not weight_view.cuh's WeightAt: that calls WeightView::scale_cols(),
// host-only as weight_view.h stands (so not callable in device code), and would recompute the
// scale row stride per element; the launch computes it once and passes it in.
__device__ __forceinline__ float KvbAt(const WeightView& w, int64_t scale_cols, int64_t r,
                                       int64_t c) {
  const float raw = WeightRaw(w, r, c);
  if (w.type != WeightType::kFp8E4M3) return raw;
  return raw * w.scale_inv[(r / w.block_rows) * scale_cols + c / w.block_cols];
}

// FP8 only (other dtypes may leave the block sizes unset).
int64_t ScaleCols(const WeightView& w) {
  if (w.type != WeightType::kFp8E4M3) return 0;
  return (w.cols + w.block_cols - 1) / w.block_cols;
}

// Grid (row tiles, heads). q_cat[r, h] = [W_UK_h^T q_nope * scale | RoPE(q_pe) * scale]: the
// query moved into the latent space, so one dot product with a cached [latent | k_pe] token is
// its full score. A thread owns latent columns and sums over nope in order, as the CPU does.
__global__ void __launch_bounds__(kThreads)
    AbsorbQueryKernel(MlaAttentionParams p, int64_t scale_cols) {
  __shared__ float q_nope[kRowTile * kMlaMaxNopeDim];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowTile;
  const int64_t h = blockIdx.y;
  const int64_t qk = p.nope_dim + p.rope_dim, dim = p.kv_lora + p.rope_dim;
  const int64_t tile_rows = p.rows - row0 < kRowTile ? p.rows - row0 : kRowTile;
  // Rows past the end of the batch are zeros, so the unrolled loop below stays finite.
  for (int64_t i = threadIdx.x; i < kRowTile * p.nope_dim; i += kThreads) {
    const int64_t r = i / p.nope_dim, d = i % p.nope_dim;
    q_nope[i] = r < tile_rows ? p.q[((row0 + r) * p.heads + h) * qk + d] : 0.0f;
  }
  __syncthreads();

  const int64_t w_row = h * (p.nope_dim + p.v_dim);
  for (int64_t c = threadIdx.x; c < p.kv_lora; c += kThreads) {
    float acc[kRowTile];
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) acc[i] = 0.0f;
    for (int64_t d = 0; d < p.nope_dim; ++d) {
      const float w = KvbAt(p.kv_b, scale_cols, w_row + d, c);
#pragma unroll
      for (int i = 0; i < kRowTile; ++i) acc[i] = fmaf(q_nope[i * p.nope_dim + d], w, acc[i]);
    }
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) {
      if (i < tile_rows) {
        p.workspace[((row0 + i) * p.heads + h) * dim + c] = acc[i] * p.softmax_scale;
      }
    }
  }

  const int64_t half = p.rope_dim / 2;
  for (int64_t i = threadIdx.x; i < tile_rows * half; i += kThreads) {
    const int64_t row = row0 + i / half, k = i % half;
    const float* pe = p.q + (row * p.heads + h) * qk + p.nope_dim;
    const int64_t t = static_cast<int64_t>(p.positions[row]) * half + k;
    const float a = pe[2 * k], b = pe[2 * k + 1], cs = p.cos[t], sn = p.sin[t];
    float* dst = p.workspace + (row * p.heads + h) * dim + p.kv_lora;
    dst[2 * k] = (a * cs - b * sn) * p.softmax_scale;
    dst[2 * k + 1] = (b * cs + a * sn) * p.softmax_scale;
  }
}

// One block per (row, head), item = row * heads + head. Warps take keys round-robin (adjacent
// tokens of a page at once across the block); a warp reads each key once into registers, scores
// it against q_cat (shared) and folds it into its own running max, sum and latent accumulator
// (F32, online softmax); the block then merges its warps' states. No storage grows with the
// context: any number of keys. Only keys [0, row_keys[row]) and their pages are read.
template <LatentFormat F>
__global__ void __launch_bounds__(kThreads) AttendKernel(MlaAttentionParams p) {
  const uint8_t* cache = static_cast<const uint8_t*>(p.cache);
  const int64_t token_bytes = LatentTokenBytes(F, p.kv_lora, p.rope_dim);
  __shared__ float q_cat[kMaxTokenDim];
  __shared__ float warp_acc[kWarps * kMlaMaxKvLora];
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  const int64_t item = blockIdx.x;
  const int64_t row = item / p.heads;
  const int dim = static_cast<int>(p.kv_lora + p.rope_dim);
  const int kv_lora = static_cast<int>(p.kv_lora);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int c = threadIdx.x; c < dim; c += kThreads) q_cat[c] = p.workspace[item * dim + c];
  __syncthreads();

  const int keys = p.row_keys[row];
  const int32_t* table = p.block_tables + p.row_table[row];
  const int page_size = static_cast<int>(p.page_size);
  float run_max = -INFINITY, run_sum = 0.0f;
  float acc[kLatentPerLane];
#pragma unroll
  for (int k = 0; k < kLatentPerLane; ++k) acc[k] = 0.0f;
  for (int j = warp; j < keys; j += kWarps) {
    const uint8_t* token =
        cache + (static_cast<int64_t>(table[j / page_size]) * page_size + j % page_size) *
                    token_bytes;
    float x[kTokenPerLane];
    float score = 0.0f;
#pragma unroll
    for (int k = 0; k < kTokenPerLane; ++k) {
      const int c = lane + 32 * k;
      x[k] = 0.0f;
      if (c < dim) {
        x[k] = LatentValue<F>(token, c, kv_lora);
        score = fmaf(x[k], q_cat[c], score);
      }
    }
    // A butterfly leaves the same sum on every lane, so the softmax state stays uniform.
    for (int offset = 16; offset > 0; offset /= 2) {
      score += __shfl_xor_sync(0xffffffffu, score, offset);
    }
    const float new_max = fmaxf(run_max, score);
    const float rescale = expf(run_max - new_max);  // 0 on the warp's first key
    const float prob = expf(score - new_max);
    run_sum = run_sum * rescale + prob;
    run_max = new_max;
    // Values past kv_lora (k_pe, when kv_lora < 512) are accumulated too but never stored.
#pragma unroll
    for (int k = 0; k < kLatentPerLane; ++k) acc[k] = fmaf(prob, x[k], acc[k] * rescale);
  }

  if (lane == 0) {
    warp_max[warp] = run_max;
    warp_sum[warp] = run_sum;
  }
#pragma unroll
  for (int k = 0; k < kLatentPerLane; ++k) {
    const int c = lane + 32 * k;
    if (c < kv_lora) warp_acc[warp * kMlaMaxKvLora + c] = acc[k];
  }
  __syncthreads();
  float block_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, warp_max[w]);
  // A warp that saw no key (fewer keys than warps) weighs 0; a row without keys gets zeros.
  float weight[kWarps];
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = warp_max[w] == -INFINITY ? 0.0f : expf(warp_max[w] - block_max);
    total += warp_sum[w] * weight[w];
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  float* o_lat = p.workspace + p.rows * p.heads * dim + item * kv_lora;
  for (int c = threadIdx.x; c < kv_lora; c += kThreads) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o = fmaf(warp_acc[w * kMlaMaxKvLora + c], weight[w], o);
    o_lat[c] = o * inv;
  }
}

// Grid (row tiles, heads). out[r, h, :] = W_UV_h o_lat[r, h]: a warp per output value, its
// lanes along the kv_b row (coalesced), the tile's latent outputs in shared memory.
__global__ void __launch_bounds__(kThreads)
    OutputKernel(MlaAttentionParams p, int64_t scale_cols) {
  __shared__ float o_lat[kRowTile * kMlaMaxKvLora];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowTile;
  const int64_t h = blockIdx.y;
  const int64_t tile_rows = p.rows - row0 < kRowTile ? p.rows - row0 : kRowTile;
  const int64_t kv_lora = p.kv_lora;
  const float* src = p.workspace + p.rows * p.heads * (p.kv_lora + p.rope_dim);
  for (int64_t i = threadIdx.x; i < kRowTile * kv_lora; i += kThreads) {
    const int64_t r = i / kv_lora, c = i % kv_lora;
    o_lat[i] = r < tile_rows ? src[((row0 + r) * p.heads + h) * kv_lora + c] : 0.0f;
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t w_row = h * (p.nope_dim + p.v_dim) + p.nope_dim;
  for (int64_t v = warp; v < p.v_dim; v += kWarps) {
    float acc[kRowTile];
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) acc[i] = 0.0f;
    for (int64_t c = lane; c < kv_lora; c += 32) {
      const float w = KvbAt(p.kv_b, scale_cols, w_row + v, c);
#pragma unroll
      for (int i = 0; i < kRowTile; ++i) acc[i] = fmaf(w, o_lat[i * kv_lora + c], acc[i]);
    }
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) {
      for (int offset = 16; offset > 0; offset /= 2) {
        acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], offset);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < kRowTile; ++i) {
        if (i < tile_rows) p.out[((row0 + i) * p.heads + h) * p.v_dim + v] = acc[i];
      }
    }
  }
}

bool ValidShapes(const MlaAttentionParams& p) {
  if (p.rows < 0 || p.heads < 1 || p.nope_dim < 1 || p.rope_dim < 1 || p.v_dim < 1 ||
      p.kv_lora < 1 || p.page_size < 1) {
    return false;
  }
  if (p.rope_dim % 2 != 0 || p.kv_lora > kMlaMaxKvLora || p.rope_dim > kMlaMaxRopeDim ||
      p.nope_dim > kMlaMaxNopeDim) {
    return false;
  }
  // heads is gridDim.y of the projection kernels; rows * heads is the attention's gridDim.x.
  if (p.heads > 65535 || p.page_size > INT32_MAX || p.rows > INT32_MAX / p.heads) return false;
  if (!std::isfinite(p.softmax_scale)) return false;
  const WeightView& w = p.kv_b;
  if (w.rows != p.heads * (p.nope_dim + p.v_dim) || w.cols != p.kv_lora) return false;
  if (w.type == WeightType::kFp8E4M3 && (w.block_rows < 1 || w.block_cols < 1)) return false;
  return true;
}

bool ValidPointers(const MlaAttentionParams& p) {
  if (p.kv_b.data == nullptr) return false;
  if (p.kv_b.type == WeightType::kFp8E4M3 && p.kv_b.scale_inv == nullptr) return false;
  return p.q && p.cos && p.sin && p.positions && p.row_keys && p.row_table && p.block_tables &&
         p.cache && p.workspace && p.out;
}

}  // namespace

size_t MlaAttentionWorkspaceFloats(int64_t rows, int64_t heads, int64_t kv_lora,
                                   int64_t rope_dim) {
  if (rows <= 0 || heads <= 0 || kv_lora <= 0 || rope_dim < 0) return 0;
  return static_cast<size_t>(rows * heads * (2 * kv_lora + rope_dim));
}

namespace {

dim3 ProjectionTiles(const MlaAttentionParams& p) {
  return dim3(static_cast<unsigned>((p.rows + kRowTile - 1) / kRowTile),
              static_cast<unsigned>(p.heads));
}

}  // namespace

cudaError_t LaunchMlaAbsorbQuery(const MlaAttentionParams& p, cudaStream_t stream) {
  if (!ValidShapes(p)) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  if (!ValidPointers(p)) return cudaErrorInvalidValue;
  AbsorbQueryKernel<<<ProjectionTiles(p), kThreads, 0, stream>>>(p, ScaleCols(p.kv_b));
  return cudaGetLastError();
}

cudaError_t LaunchMlaOutput(const MlaAttentionParams& p, cudaStream_t stream) {
  if (!ValidShapes(p)) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  if (!ValidPointers(p)) return cudaErrorInvalidValue;
  OutputKernel<<<ProjectionTiles(p), kThreads, 0, stream>>>(p, ScaleCols(p.kv_b));
  return cudaGetLastError();
}

cudaError_t LaunchMlaAttention(const MlaAttentionParams& p, cudaStream_t stream) {
  if (!ValidShapes(p)) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  if (!ValidPointers(p)) return cudaErrorInvalidValue;
  if (const cudaError_t e = LaunchMlaAbsorbQuery(p, stream); e != cudaSuccess) return e;
  const unsigned items = static_cast<unsigned>(p.rows * p.heads);
  switch (p.format) {
    case LatentFormat::kF32: AttendKernel<LatentFormat::kF32><<<items, kThreads, 0, stream>>>(p); break;
    case LatentFormat::kBF16:
      AttendKernel<LatentFormat::kBF16><<<items, kThreads, 0, stream>>>(p);
      break;
    case LatentFormat::kFp8: AttendKernel<LatentFormat::kFp8><<<items, kThreads, 0, stream>>>(p); break;
  }
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  return LaunchMlaOutput(p, stream);
}

}  // namespace dserve::kernels::cuda
