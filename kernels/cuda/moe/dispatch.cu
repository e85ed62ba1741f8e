// The MoE dispatch kernel (one CTA: a stable counting sort of the router's pairs by expert, and
// the GEMM's tile list) and its host-side sizing and checks.
//
// The pairs are cut into one contiguous segment per warp. Pass 1: each warp counts its segment
// per expert (lanes naming the same expert found with match.any, the lowest adds the group's
// size), into its own row of a [warps][experts] table, so no atomics and no order dependence.
// Then each expert's column is scanned over the warps, the experts are scanned (warp 0), and the
// table becomes each warp's first slot per expert. Pass 2: each warp walks its segment again in
// order, 32 pairs at a time; a lane's slot is its warp's cursor for the expert plus the number
// of lower lanes with the same expert, and the group's lowest lane advances the cursor. Slots
// therefore follow the pair index within every expert: the order a sequential loop would give.
#include "kernels/cuda/moe/dispatch.h"

#include <algorithm>
#include <cstdint>

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr size_t kAlign = 256;
constexpr int kDefaultSmemLimit = 48 * 1024;

struct DispatchArgs {
  const int32_t* ids;
  MoeDispatchOutputs out;
  int32_t pairs, top_k, experts, block_m;
};

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Shared memory: the [warps][experts] table, then the experts' slot offsets and tile offsets
// (each with a total at [experts]).
size_t SmemBytes(int experts) {
  return (static_cast<size_t>(kWarps) * experts + 2 * (static_cast<size_t>(experts) + 1)) *
         sizeof(int32_t);
}

// The expert of pair i of this warp's segment, or -1 (past the segment, or an id out of range).
__device__ __forceinline__ int ExpertOf(const DispatchArgs& a, int64_t i, int64_t end) {
  if (i >= end) return -1;
  const int e = __ldg(a.ids + i);
  return e >= 0 && e < a.experts ? e : -1;
}

__global__ void __launch_bounds__(kThreads) DispatchKernel(const __grid_constant__ DispatchArgs a) {
  extern __shared__ __align__(16) int32_t smem[];
  const int E = a.experts;
  int32_t* table = smem;                 // [kWarps][E]: counts, then first slots
  int32_t* offset = table + kWarps * E;  // [E + 1]: first slot of each expert
  int32_t* tile_base = offset + E + 1;   // [E + 1]: first tile of each expert
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32, warp = tid / 32;
  const unsigned lower_lanes = (1u << lane) - 1u;

  for (int i = tid; i < kWarps * E; i += kThreads) table[i] = 0;
  __syncthreads();

  // Segments of whole 32-pair steps, so every step of a warp is warp-uniform.
  const int64_t per_warp = ((static_cast<int64_t>(a.pairs) + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int64_t begin = warp * per_warp;
  const int64_t end = min(static_cast<int64_t>(a.pairs), begin + per_warp);
  int32_t* my_row = table + warp * E;
  for (int64_t base = begin; base < end; base += 32) {
    const int e = ExpertOf(a, base + lane, end);
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (e >= 0 && lane == __ffs(peers) - 1) my_row[e] += __popc(peers);
    __syncwarp();  // the next step's leader may be another lane
  }
  __syncthreads();

  // Each expert's column: counts -> each warp's first slot relative to the expert; the total
  // goes to offset[e] until the scan below.
  for (int e = tid; e < E; e += kThreads) {
    int32_t run = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int32_t c = table[w * E + e];
      table[w * E + e] = run;
      run += c;
    }
    offset[e] = run;
  }
  __syncthreads();

  // Exclusive scans over the experts of the counts and of the tiles they need: warp 0, each lane
  // a contiguous run of experts, the runs' sums scanned with shuffles.
  if (warp == 0) {
    const int chunk = (E + 31) / 32;
    const int lo = min(E, lane * chunk), hi = min(E, lo + chunk);
    int32_t rows = 0, tiles = 0;
    for (int e = lo; e < hi; ++e) {
      rows += offset[e];
      tiles += (offset[e] + a.block_m - 1) / a.block_m;
    }
    int32_t rows_incl = rows, tiles_incl = tiles;
    for (int d = 1; d < 32; d *= 2) {
      const int32_t r = __shfl_up_sync(0xffffffffu, rows_incl, d);
      const int32_t t = __shfl_up_sync(0xffffffffu, tiles_incl, d);
      if (lane >= d) {
        rows_incl += r;
        tiles_incl += t;
      }
    }
    int32_t row_run = rows_incl - rows, tile_run = tiles_incl - tiles;
    for (int e = lo; e < hi; ++e) {
      const int32_t c = offset[e];
      a.out.counts[e] = c;
      offset[e] = row_run;
      tile_base[e] = tile_run;
      row_run += c;
      tile_run += (c + a.block_m - 1) / a.block_m;
    }
    if (lane == 31) {  // the inclusive sums of the last lane are the totals
      offset[E] = rows_incl;
      tile_base[E] = tiles_incl;
    }
  }
  __syncthreads();

  for (int e = tid; e <= E; e += kThreads) a.out.offsets[e] = offset[e];
  if (tid == 0) *a.out.num_tiles = tile_base[E];
  for (int i = tid; i < kWarps * E; i += kThreads) table[i] += offset[i % E];
  // Tile j belongs to the expert e with tile_base[e] <= j < tile_base[e + 1] (experts without
  // rows have no tiles: their range is empty); a binary search spreads a skewed expert's many
  // tiles over all threads.
  const int32_t total_tiles = tile_base[E];
  for (int32_t j = tid; j < total_tiles; j += kThreads) {
    int lo = 0, hi = E;  // tile_base[lo] <= j < tile_base[hi]
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (tile_base[mid] <= j) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    MoeTile t;
    t.expert = lo;
    t.begin = offset[lo] + (j - tile_base[lo]) * a.block_m;
    t.end = min(t.begin + a.block_m, offset[lo + 1]);
    t.unused = 0;
    a.out.tiles[j] = t;
  }
  __syncthreads();

  for (int64_t base = begin; base < end; base += 32) {
    const int64_t i = base + lane;
    const int e = ExpertOf(a, i, end);
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int32_t slot = e >= 0 ? my_row[e] + __popc(peers & lower_lanes) : -1;
    __syncwarp();  // every lane has read the cursor before its group's leader moves it
    if (e >= 0 && lane == __ffs(peers) - 1) my_row[e] += __popc(peers);
    __syncwarp();
    if (i < end) {
      a.out.pair_slot[i] = slot;
      if (slot >= 0) {
        a.out.slot_token[slot] = static_cast<int32_t>(i / a.top_k);
        a.out.slot_pair[slot] = static_cast<int32_t>(i);
      }
    }
  }
}

bool ValidShape(const MoeDispatchShape& s) {
  return s.tokens >= 0 && s.top_k >= 1 && s.top_k <= kMoeMaxTopK && s.experts >= 1 &&
         s.experts <= kMoeMaxExperts && s.block_m >= 1 && s.block_m <= 1024 &&
         s.tokens <= kMoeMaxPairs / s.top_k;
}

}  // namespace

int64_t MoeMaxTiles(const MoeDispatchShape& shape) {
  if (!ValidShape(shape)) return 0;
  const int64_t pairs = shape.pairs();
  return std::min<int64_t>(pairs, (pairs + shape.block_m - 1) / shape.block_m + shape.experts);
}

size_t MoeDispatchWorkspaceBytes(const MoeDispatchShape& shape) {
  if (!ValidShape(shape)) return 0;
  const size_t pairs = static_cast<size_t>(shape.pairs());
  return AlignUp(shape.experts * sizeof(int32_t)) + AlignUp((shape.experts + 1) * sizeof(int32_t)) +
         3 * AlignUp(pairs * sizeof(int32_t)) +
         AlignUp(static_cast<size_t>(MoeMaxTiles(shape)) * sizeof(MoeTile)) +
         AlignUp(sizeof(int32_t));
}

MoeDispatchOutputs MoeDispatchViews(void* workspace, const MoeDispatchShape& shape) {
  MoeDispatchOutputs o;
  if (workspace == nullptr || !ValidShape(shape)) return o;
  const size_t pairs = static_cast<size_t>(shape.pairs());
  uint8_t* p = static_cast<uint8_t*>(workspace);
  auto take = [&p](size_t bytes) {
    uint8_t* q = p;
    p += AlignUp(bytes);
    return q;
  };
  o.counts = reinterpret_cast<int32_t*>(take(shape.experts * sizeof(int32_t)));
  o.offsets = reinterpret_cast<int32_t*>(take((shape.experts + 1) * sizeof(int32_t)));
  o.slot_token = reinterpret_cast<int32_t*>(take(pairs * sizeof(int32_t)));
  o.slot_pair = reinterpret_cast<int32_t*>(take(pairs * sizeof(int32_t)));
  o.pair_slot = reinterpret_cast<int32_t*>(take(pairs * sizeof(int32_t)));
  o.tiles =
      reinterpret_cast<MoeTile*>(take(static_cast<size_t>(MoeMaxTiles(shape)) * sizeof(MoeTile)));
  o.num_tiles = reinterpret_cast<int32_t*>(take(sizeof(int32_t)));
  return o;
}

cudaError_t LaunchMoeDispatch(const int32_t* ids, const MoeDispatchShape& shape, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  if (!ValidShape(shape) || workspace == nullptr ||
      reinterpret_cast<uintptr_t>(workspace) % kAlign != 0 ||
      workspace_bytes < MoeDispatchWorkspaceBytes(shape) || (shape.pairs() > 0 && ids == nullptr)) {
    return cudaErrorInvalidValue;
  }
  DispatchArgs args;
  args.ids = ids;
  args.out = MoeDispatchViews(workspace, shape);
  args.pairs = static_cast<int32_t>(shape.pairs());
  args.top_k = shape.top_k;
  args.experts = shape.experts;
  args.block_m = shape.block_m;
  const size_t smem = SmemBytes(shape.experts);
  // Above 48 KB (over about 740 experts) the kernel must opt in.
  if (smem > kDefaultSmemLimit) {
    if (const cudaError_t e = cudaFuncSetAttribute(
            DispatchKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        e != cudaSuccess) {
      return e;
    }
  }
  DispatchKernel<<<1, kThreads, smem, stream>>>(args);
  return cudaGetLastError();
}

namespace {

__global__ void AppendExpertKernel(const int32_t* ids, const float* weights, int64_t n,
                                   int32_t top_k, int32_t expert, float weight, int32_t* ids_out,
                                   float* weights_out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t t = i / (top_k + 1);
  const int32_t j = static_cast<int32_t>(i % (top_k + 1));
  ids_out[i] = j < top_k ? ids[t * top_k + j] : expert;
  weights_out[i] = j < top_k ? weights[t * top_k + j] : weight;
}

}  // namespace

cudaError_t LaunchAppendExpert(const int32_t* ids, const float* weights, int64_t tokens,
                               int32_t top_k, int32_t expert, float weight, int32_t* ids_out,
                               float* weights_out, cudaStream_t stream) {
  if (tokens < 0 || top_k < 1 || top_k >= kMoeMaxTopK || expert < 0 ||
      expert >= kMoeMaxExperts || tokens * (top_k + 1) > kMoeMaxPairs) {
    return cudaErrorInvalidValue;
  }
  if (tokens == 0) return cudaSuccess;
  if (ids == nullptr || weights == nullptr || ids_out == nullptr || weights_out == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t n = tokens * (top_k + 1);
  constexpr int kBlock = 256;
  AppendExpertKernel<<<static_cast<unsigned>((n + kBlock - 1) / kBlock), kBlock, 0, stream>>>(
      ids, weights, n, top_k, expert, weight, ids_out, weights_out);
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
