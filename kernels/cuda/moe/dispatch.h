// MoE dispatch on the device: the router's (token, choice) pairs grouped by expert — counts,
// offsets, the expert-sorted permutation and its inverse, and the grouped GEMM's row tiles.
#pragma once

// A plain C++17 header: the .cu includes it (CMake compiles CUDA as C++17).
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace dserve::kernels::cuda {

// The most experts one dispatch handles (the routing kernel's own limit), the largest top_k,
// and the most pairs (tokens * top_k; slots are int32 on the device).
inline constexpr int kMoeMaxExperts = 1024;
inline constexpr int kMoeMaxTopK = 16;
inline constexpr int64_t kMoeMaxPairs = int64_t{1} << 30;

// What one dispatch is sized for; all of it is known on the host before the router runs.
struct MoeDispatchShape {
  int64_t tokens = 0;   // T (0 allowed)
  int32_t top_k = 0;    // k in [1, kMoeMaxTopK]
  int32_t experts = 0;  // E in [1, kMoeMaxExperts]
  int32_t block_m = 0;  // rows per GEMM tile (MoeGemmBlockM in grouped_gemm.h), [1, 1024]
  int64_t pairs() const { return tokens * top_k; }
};

// One row tile of the grouped GEMM: rows [begin, end) of the expert-sorted order, all routed to
// `expert`, end - begin in [1, block_m]. A tile never spans two experts.
struct alignas(16) MoeTile {
  int32_t expert;
  int32_t begin;
  int32_t end;
  int32_t unused;
};

// The most tiles a dispatch can produce whatever the routing: each expert's last tile may be
// partial, and no tile is empty, so min(pairs, ceil(pairs / block_m) + experts). The GEMM grid
// is launched for this many; CTAs past the real count (num_tiles) exit at once.
int64_t MoeMaxTiles(const MoeDispatchShape& shape);

// Device memory the dispatch writes, carved from one workspace (each array 256-byte aligned).
// Slot s is a position in the expert-sorted order; pair p = t * top_k + j is the router's
// choice j of token t.
struct MoeDispatchOutputs {
  int32_t* counts = nullptr;      // [experts]: pairs routed to each expert
  int32_t* offsets = nullptr;     // [experts + 1]: exclusive prefix sums; offsets[E] = slots used
  int32_t* slot_token = nullptr;  // [pairs]: token row t of slot s
  int32_t* slot_pair = nullptr;   // [pairs]: pair p of slot s
  int32_t* pair_slot = nullptr;   // [pairs]: slot of pair p (the inverse), -1 if p was dropped
  MoeTile* tiles = nullptr;       // [MoeMaxTiles]: expert-major, rows ascending
  int32_t* num_tiles = nullptr;   // [1]: tiles written
};

// Bytes of workspace for `shape` (0 is never returned: the counts always exist).
size_t MoeDispatchWorkspaceBytes(const MoeDispatchShape& shape);
// Where each output lives in `workspace` (MoeDispatchWorkspaceBytes bytes, 256-byte aligned).
MoeDispatchOutputs MoeDispatchViews(void* workspace, const MoeDispatchShape& shape);

// ids [tokens, top_k] I32 on the device -> the outputs above, in one single-CTA kernel on
// `stream` (no host synchronisation). Deterministic: slots are ordered by expert, then by pair
// index (tokens ascending within an expert, a token's choices in j order). An id outside
// [0, experts) is dropped: its pair gets no slot (pair_slot -1) and slots past offsets[E] are
// not written, so nothing is read or written out of bounds. cudaErrorInvalidValue (nothing
// launched) for a shape out of range, a workspace too small or misaligned, or null ids with
// pairs > 0.
cudaError_t LaunchMoeDispatch(const int32_t* ids, const MoeDispatchShape& shape, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream);

// A shared expert run with the routed ones as one more expert every token chooses:
// ids_out [tokens, top_k + 1] is ids with `expert` appended to each row, weights_out
// [tokens, top_k + 1] is weights with `weight` appended. cudaErrorInvalidValue (nothing
// launched) for top_k outside [1, kMoeMaxTopK), an expert outside [0, kMoeMaxExperts) or null
// pointers with tokens > 0; cudaSuccess without a launch for no tokens.
cudaError_t LaunchAppendExpert(const int32_t* ids, const float* weights, int64_t tokens,
                               int32_t top_k, int32_t expert, float weight, int32_t* ids_out,
                               float* weights_out, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
