// The MoE combine kernel (a thread per 4 columns of a token's row) and LaunchMoeExperts, which
// chains the conversion, dispatch, grouped GEMMs and combine over one workspace.
#include "kernels/cuda/moe/combine.h"

#include <cstdint>

#include "kernels/cuda/linear.h"

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kAlign = 256;

// Grid (tokens, column blocks). Sums in j order, so a token's row depends on nothing else.
__global__ void __launch_bounds__(kThreads)
    CombineKernel(const float4* y, const int32_t* pair_slot, const float* weights, int32_t top_k,
                  int32_t hidden4, float4* out) {
  const int64_t t = blockIdx.x;
  const int c = static_cast<int>(blockIdx.y) * kThreads + static_cast<int>(threadIdx.x);
  if (c >= hidden4) return;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int j = 0; j < top_k; ++j) {
    const int32_t slot = __ldg(pair_slot + t * top_k + j);
    if (slot < 0) continue;
    const float w = __ldg(weights + t * top_k + j);
    const float4 v = __ldg(y + static_cast<int64_t>(slot) * hidden4 + c);
    acc.x = fmaf(w, v.x, acc.x);
    acc.y = fmaf(w, v.y, acc.y);
    acc.z = fmaf(w, v.z, acc.z);
    acc.w = fmaf(w, v.w, acc.w);
  }
  out[t * hidden4 + c] = acc;
}

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

bool Aligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

MoeDispatchShape ShapeOf(const MoeExpertsParams& p) {
  MoeDispatchShape s;
  s.tokens = p.tokens;
  s.top_k = p.top_k;
  s.experts = p.num_experts;
  s.block_m = MoeExpertsBlockM(p);
  return s;
}

bool ValidShape(const MoeExpertsParams& p) {
  if (p.tokens < 0 || p.top_k < 1 || p.top_k > kMoeMaxTopK || p.num_experts < 1 ||
      p.num_experts > kMoeMaxExperts || p.tokens > kMoeMaxPairs / p.top_k) {
    return false;
  }
  if (p.hidden < kMoeGemmBlockK || p.hidden % kMoeGemmBlockK != 0 || p.hidden > (1 << 20) ||
      p.inter < kMoeGemmBlockK || p.inter % kMoeGemmBlockK != 0 || p.inter > (1 << 20)) {
    return false;
  }
  if (p.block_m != 0 && p.block_m != 16 && p.block_m != 64 && p.block_m != 128) return false;
  return p.weight_type == MoeWeightType::kFp8E4M3 || p.weight_type == MoeWeightType::kBF16;
}

}  // namespace

cudaError_t LaunchMoeCombine(const float* y, const int32_t* pair_slot, const float* weights,
                             int64_t tokens, int32_t top_k, int64_t hidden, float* out,
                             cudaStream_t stream) {
  if (tokens < 0 || top_k < 1 || top_k > kMoeMaxTopK || tokens > kMoeMaxPairs / top_k ||
      hidden < 4 || hidden % 4 != 0 || hidden / 4 > (int64_t{65535} * kThreads)) {
    return cudaErrorInvalidValue;
  }
  if (tokens == 0) return cudaSuccess;
  if (y == nullptr || pair_slot == nullptr || weights == nullptr || out == nullptr ||
      !Aligned(y, 16) || !Aligned(out, 16)) {
    return cudaErrorInvalidValue;
  }
  const int32_t hidden4 = static_cast<int32_t>(hidden / 4);
  const dim3 grid(static_cast<unsigned>(tokens),
                  static_cast<unsigned>((hidden4 + kThreads - 1) / kThreads));
  CombineKernel<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const float4*>(y), pair_slot,
                                               weights, top_k, hidden4,
                                               reinterpret_cast<float4*>(out));
  return cudaGetLastError();
}

int32_t MoeExpertsBlockM(const MoeExpertsParams& p) {
  if (p.block_m != 0) return p.block_m;
  return MoeGemmBlockM(p.tokens * p.top_k, p.num_experts);
}

size_t MoeExpertsWorkspaceBytes(const MoeExpertsParams& p) {
  if (!ValidShape(p)) return 0;
  const size_t pairs = static_cast<size_t>(p.tokens * p.top_k);
  return MoeDispatchWorkspaceBytes(ShapeOf(p)) +
         AlignUp(static_cast<size_t>(p.tokens * p.hidden) * 2) +
         AlignUp(pairs * static_cast<size_t>(p.inter) * 2) +
         AlignUp(pairs * static_cast<size_t>(p.hidden) * 4);
}

cudaError_t LaunchMoeExperts(const MoeExpertsParams& p, cudaStream_t stream) {
  if (!ValidShape(p)) return cudaErrorInvalidValue;
  if (p.tokens == 0) return cudaSuccess;
  if (p.x == nullptr || p.ids == nullptr || p.weights == nullptr || p.out == nullptr ||
      p.experts == nullptr || p.workspace == nullptr || !Aligned(p.workspace, kAlign) ||
      !Aligned(p.out, 16) || p.workspace_bytes < MoeExpertsWorkspaceBytes(p)) {
    return cudaErrorInvalidValue;
  }
  const MoeDispatchShape shape = ShapeOf(p);
  const int64_t pairs = shape.pairs();
  const size_t dispatch_bytes = MoeDispatchWorkspaceBytes(shape);
  uint8_t* base = static_cast<uint8_t*>(p.workspace);
  uint16_t* x_bf16 = reinterpret_cast<uint16_t*>(base + dispatch_bytes);
  uint16_t* act = reinterpret_cast<uint16_t*>(
      reinterpret_cast<uint8_t*>(x_bf16) + AlignUp(static_cast<size_t>(p.tokens * p.hidden) * 2));
  float* y = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(act) +
                                      AlignUp(static_cast<size_t>(pairs * p.inter) * 2));

  if (const cudaError_t e = LaunchF32ToBf16(p.x, p.tokens * p.hidden, x_bf16, stream);
      e != cudaSuccess) {
    return e;
  }
  if (const cudaError_t e = LaunchMoeDispatch(p.ids, shape, base, dispatch_bytes, stream);
      e != cudaSuccess) {
    return e;
  }
  const MoeDispatchOutputs routing = MoeDispatchViews(base, shape);
  MoeGemmParams g;
  g.kind = MoeGemmKind::kGateUp;
  g.weight_type = p.weight_type;
  g.experts = p.experts;
  g.num_experts = p.num_experts;
  g.n = p.inter;
  g.k = p.hidden;
  g.a = x_bf16;
  g.a_rows = p.tokens;
  g.slot_token = routing.slot_token;
  g.out = act;
  g.tiles = routing.tiles;
  g.num_tiles = routing.num_tiles;
  g.max_tiles = MoeMaxTiles(shape);
  g.block_m = shape.block_m;
  if (const cudaError_t e = LaunchMoeGroupedGemm(g, stream); e != cudaSuccess) return e;
  MoeGemmParams d = g;
  d.kind = MoeGemmKind::kDown;
  d.n = p.hidden;
  d.k = p.inter;
  d.a = act;
  d.a_rows = pairs;
  d.slot_token = nullptr;
  d.out = y;
  if (const cudaError_t e = LaunchMoeGroupedGemm(d, stream); e != cudaSuccess) return e;
  return LaunchMoeCombine(y, routing.pair_slot, p.weights, p.tokens, p.top_k, p.hidden, p.out,
                          stream);
}

}  // namespace dserve::kernels::cuda
