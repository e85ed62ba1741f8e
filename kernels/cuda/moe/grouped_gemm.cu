// The grouped GEMM kernel (a CTA per (row tile, 128 weight rows); BF16 mma.sync, F32
// accumulation, a cp.async pipeline of 128-deep stages) and its host-side checks and launch.
//
// PTX fragment layouts relied on (PTX ISA 9.7.14.5.8, "Matrix Fragments for mma.m16n8k16 with
// floating point type"), with g = lane / 4 and t = lane % 4, the lower k or column of a pair in
// the lower 16 bits:
//   A (16x16, row):  a0 = (row g, k 2t..2t+1)    a1 = (row g+8, k 2t..2t+1)
//                    a2 = (row g, k 2t+8..2t+9)  a3 = (row g+8, k 2t+8..2t+9)
//   B (16x8, col):   b0 = (k 2t..2t+1, col g)    b1 = (k 2t+8..2t+9, col g)
//   C/D (16x8 F32):  c0, c1 = (row g, cols 2t, 2t+1)   c2, c3 = (row g+8, cols 2t, 2t+1)
// A sum over k does not care which physical k each MMA lane-pair holds, as long as A and B
// agree. So the kernel renames k: within each 64-deep span, MMA step s (0..3) of lane t takes
// the physical k 16t + 4s + {0, 1} as its "2t, 2t+1" and 16t + 4s + {2, 3} as its "2t+8, 2t+9".
// Lane t then needs the 16 consecutive k values 16t..16t+15 of its rows for the whole span:
// one 16-byte shared load of an FP8 weight row gives the B fragments of four MMA steps, two
// of a BF16 row (activations or BF16 weights) the A (or B) fragments of four steps. No
// ldmatrix, no transposes, and the FP8 bytes go from shared memory to registers once.
#include "kernels/cuda/moe/grouped_gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda/ptx.cuh"

namespace dserve::kernels::cuda {
namespace {

constexpr int kBlockK = static_cast<int>(kMoeGemmBlockK);
constexpr int kBlockN = 128;  // weight rows per CTA
constexpr int kWarpsN = 4;
constexpr int kWarpN = kBlockN / kWarpsN;  // 32 weight rows per warp: 4 MMA n-tiles
constexpr int kNTiles = kWarpN / 8;
constexpr int kARowBytes = kBlockK * 2;  // a stage's row of BF16 activations
constexpr int kMaxDim = 1 << 20;         // n and k (int32 index arithmetic in the kernel)
constexpr int kDefaultSmemLimit = 48 * 1024;

struct GemmArgs {
  const MoeExpertWeights* experts;
  const uint8_t* a;
  const int32_t* slot_token;
  void* out;
  const MoeTile* tiles;
  const int32_t* num_tiles;
  int32_t n, k, n_blocks;
};

// ---- Small helpers (the shared PTX wrappers are in ../ptx.cuh) --------------------------------

// Two E4M3 bytes (the lower k in the low byte) as two BF16 values, exactly: every finite E4M3
// value, subnormals included, is an F16 value and then a BF16 value.
__device__ __forceinline__ uint32_t E4m3x2ToBf16x2(uint32_t pair) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xFFFFu), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  return PackBf16(f.x, f.y);
}

__device__ __forceinline__ uint4 LoadShared16(const uint8_t* p) {
  return *reinterpret_cast<const uint4*>(p);
}

// The CPU op's SwiGLU (cpu_ops.h SiluTimes), same operation order.
__device__ __forceinline__ float SiluTimes(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// ---- Tiling ---------------------------------------------------------------------------------

// A CTA: kBlockM rows x 128 weight rows, warps (kWarpsM x 4), a warp kWarpM rows x 32 weight
// rows. Shared memory per stage: the A tile (kBlockM rows of 128 BF16 = 256 bytes) and the B
// tile (128 weight rows of 128 values: 128 bytes FP8, 256 bytes BF16). The 16-byte chunks of a
// row are XOR-swizzled by the row's parity so the 8 lanes of one shared-load phase (rows g and
// g+1, lanes t 0..3) hit 8 different bank groups.
template <int kBlockM, int kWarpsM, bool kFp8>
struct Tiling {
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = kBlockM / kWarpsM;
  static constexpr int kMTiles = kWarpM / 16;
  static constexpr int kBRowBytes = kBlockK * (kFp8 ? 1 : 2);
  static constexpr int kBRowChunks = kBRowBytes / 16;
  static constexpr int kABytes = kBlockM * kARowBytes;
  static constexpr int kBBytes = kBlockN * kBRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes;
  // Decode (16 rows, FP8) streams weights: one stage more in flight, two CTAs per SM still fit.
  static constexpr int kStages = kBlockM == 16 && kFp8 ? 4 : 3;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  // cp.async chunks per thread and stage; a thread always copies the same chunk column.
  static constexpr int kAChunks = kABytes / 16 / kThreads;
  static constexpr int kARowStep = kThreads / (kARowBytes / 16);
  static constexpr int kBChunks = kBBytes / 16 / kThreads;
  static constexpr int kBRowStep = kThreads / kBRowChunks;
  static_assert(kMTiles >= 1 && kWarpM % 16 == 0, "whole MMA row tiles per warp");
  static_assert(kAChunks >= 1 && kAChunks * kThreads * 16 == kABytes, "A copies divide evenly");
  static_assert(kBChunks % 2 == 0 && kBRowStep * kBChunks == kBlockN,
                "B copies divide evenly; a thread's first half of rows is the tile's first half");
  static_assert(kARowStep % 2 == 0 && kBRowStep % 2 == 0, "a thread's rows share one parity");
  static_assert(kSmemBytes <= 232448, "over the 227 KB of shared memory a Hopper CTA may use");
};

// One CTA of the grouped GEMM. kGateUp: B rows [0, 64) are gate rows c0.. and [64, 128) the up
// rows c0.. of the same 64 outputs, and warp wn's n-tiles are gate (0, 1) and up (2, 3) of the
// outputs c0 + 16 wn .. + 16, so each thread holds gate and up of the same outputs and applies
// SwiGLU in registers. kDown: B rows are down rows n0 .. n0 + 127, warp wn's are 32 wn .. + 32.
template <int kBlockM, int kWarpsM, bool kFp8, bool kGateUp>
class GemmCta {
 public:
  using T = Tiling<kBlockM, kWarpsM, kFp8>;

  __device__ GemmCta(const GemmArgs& args, uint8_t* smem, const MoeTile& tile, int nb)
      : a_(args),
        smem_(smem),
        s_base_(SmemAddress(smem)),
        tid_(static_cast<int>(threadIdx.x)),
        wm_(tid_ / 32 / kWarpsN),
        wn_(tid_ / 32 % kWarpsN),
        g_(tid_ % 32 / 4),
        t_(tid_ % 4),
        begin_(tile.begin),
        end_(min(tile.end, tile.begin + kBlockM)),
        row0_(kGateUp ? nb * (kBlockN / 2) : nb * kBlockN) {
    const MoeExpertWeights& w = args.experts[tile.expert];
    const int64_t ld = static_cast<int64_t>(args.k) * (kFp8 ? 1 : 2);  // bytes per weight row
    const int b_row = tid_ / T::kBRowChunks, b_chunk = tid_ % T::kBRowChunks;
    const uint8_t* first = static_cast<const uint8_t*>(kGateUp ? w.gate : w.down);
    b_src_[0] = first + (row0_ + b_row) * ld + 16 * b_chunk;
    // The thread's second half of rows: up's (gate/up) or the tile's rows 64.. (down).
    b_src_[1] = kGateUp ? static_cast<const uint8_t*>(w.up) + (row0_ + b_row) * ld + 16 * b_chunk
                        : b_src_[0] + (kBlockN / 2) * ld;
    b_step_ = T::kBRowStep * ld;
    b_dst_ = T::kABytes + b_row * T::kBRowBytes +
             ((b_chunk ^ (kFp8 ? (b_row & 1) << 2 : b_row & 1)) << 4);
    if constexpr (kFp8) {
      // One scale per 128 x 128 block: the CTA's rows sit in one block row (64- or 128-aligned).
      const int64_t block = static_cast<int64_t>(row0_ / 128) * (args.k / kBlockK);
      scale_[0] = (kGateUp ? w.gate_scale : w.down_scale) + block;
      scale_[1] = kGateUp ? w.up_scale + block : scale_[0];
    }
    // The activation rows this thread copies: gathered tokens (gate/up) or slots (down); -1
    // past the tile's rows (zeros land instead; such rows are computed but never stored).
    const int a_row = tid_ / (kARowBytes / 16), a_chunk = tid_ % (kARowBytes / 16);
#pragma unroll
    for (int j = 0; j < T::kAChunks; ++j) {
      const int slot = begin_ + a_row + j * T::kARowStep;
      a_src_[j] = slot < end_ ? (kGateUp ? __ldg(args.slot_token + slot) : slot) : -1;
    }
    a_dst_ = a_row * kARowBytes + ((a_chunk ^ (a_row & 1)) << 4);
    a_col_ = 16 * a_chunk;
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
      for (int ni = 0; ni < kNTiles; ++ni) {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc_[mi][ni][i] = 0.0f;
      }
    }
  }

  __device__ void Run() {
    const int k_blocks = a_.k / kBlockK;
    // One commit group per stage (empty past the end), so "stage kb has landed" is always "at
    // most kStages - 2 groups pending" at the top of iteration kb.
#pragma unroll
    for (int s = 0; s < T::kStages - 1; ++s) Issue(s < k_blocks ? s : -1, s);
#pragma unroll 1
    for (int kb = 0; kb < k_blocks; ++kb) {
      CpAsyncWait<T::kStages - 2>();
      __syncthreads();  // stage kb visible to all; every warp is done with stage kb - 1's buffer
      const int next = kb + T::kStages - 1;
      Issue(next < k_blocks ? next : -1, next % T::kStages);
      Compute(kb, kb % T::kStages);
    }
    Store();
  }

 private:
  // Stage kb's A and B tiles into buffer `buffer` (kb < 0: an empty group).
  __device__ void Issue(int kb, int buffer) {
    if (kb >= 0) {
      const uint32_t dst = s_base_ + buffer * T::kStageBytes;
#pragma unroll
      for (int j = 0; j < T::kAChunks; ++j) {
        const bool valid = a_src_[j] >= 0;
        const uint8_t* src =
            valid ? a_.a + (static_cast<int64_t>(a_src_[j]) * a_.k + kb * kBlockK) * 2 + a_col_
                  : a_.a;
        CpAsync16(dst + a_dst_ + j * T::kARowStep * kARowBytes, src, valid ? 16 : 0);
      }
      const int64_t k_offset = static_cast<int64_t>(kb) * T::kBRowBytes;
#pragma unroll
      for (int j = 0; j < T::kBChunks; ++j) {
        constexpr int kHalf = T::kBChunks / 2;
        const uint8_t* src =
            j < kHalf ? b_src_[0] + j * b_step_ : b_src_[1] + (j - kHalf) * b_step_;
        CpAsync16(dst + b_dst_ + j * T::kBRowStep * T::kBRowBytes, src + k_offset, 16);
      }
    }
    CpAsyncCommit();
  }

  // The B tile row of this thread's n-tile ni (its lane's column g).
  __device__ int BRow(int ni) const {
    return kGateUp ? (ni / 2) * (kBlockN / 2) + wn_ * 16 + (ni % 2) * 8 + g_
                   : wn_ * kWarpN + ni * 8 + g_;
  }

  // The MMAs of one stage (two 64-deep spans) into c.
  __device__ void MmaStage(float (&c)[T::kMTiles][kNTiles][4], const uint8_t* sa,
                           const uint8_t* sb) const {
    const int parity = g_ & 1;  // every row this lane reads has g's parity
#pragma unroll
    for (int sp = 0; sp < 2; ++sp) {
      uint32_t b[kNTiles][4][2];
#pragma unroll
      for (int ni = 0; ni < kNTiles; ++ni) {
        const uint8_t* row = sb + BRow(ni) * T::kBRowBytes;
        if constexpr (kFp8) {
          const uint4 q = LoadShared16(row + (((4 * sp + t_) ^ (parity << 2)) << 4));
          const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
          for (int s = 0; s < 4; ++s) {
            b[ni][s][0] = E4m3x2ToBf16x2(words[s]);
            b[ni][s][1] = E4m3x2ToBf16x2(words[s] >> 16);
          }
        } else {
          const uint4 q0 = LoadShared16(row + (((8 * sp + 2 * t_) ^ parity) << 4));
          const uint4 q1 = LoadShared16(row + (((8 * sp + 2 * t_ + 1) ^ parity) << 4));
          b[ni][0][0] = q0.x;
          b[ni][0][1] = q0.y;
          b[ni][1][0] = q0.z;
          b[ni][1][1] = q0.w;
          b[ni][2][0] = q1.x;
          b[ni][2][1] = q1.y;
          b[ni][3][0] = q1.z;
          b[ni][3][1] = q1.w;
        }
      }
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        const uint8_t* lo = sa + (wm_ * T::kWarpM + mi * 16 + g_) * kARowBytes;
        const uint8_t* hi = lo + 8 * kARowBytes;
        const int c0 = ((8 * sp + 2 * t_) ^ parity) << 4;
        const int c1 = ((8 * sp + 2 * t_ + 1) ^ parity) << 4;
        const uint4 p0 = LoadShared16(lo + c0), p1 = LoadShared16(lo + c1);
        const uint4 q0 = LoadShared16(hi + c0), q1 = LoadShared16(hi + c1);
        const uint32_t a[4][4] = {{p0.x, q0.x, p0.y, q0.y},
                                  {p0.z, q0.z, p0.w, q0.w},
                                  {p1.x, q1.x, p1.y, q1.y},
                                  {p1.z, q1.z, p1.w, q1.w}};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
#pragma unroll
          for (int ni = 0; ni < kNTiles; ++ni) Mma(c[mi][ni], a[s], b[ni][s][0], b[ni][s][1]);
        }
      }
    }
  }

  __device__ void Compute(int kb, int buffer) {
    const uint8_t* sa = smem_ + buffer * T::kStageBytes;
    const uint8_t* sb = sa + T::kABytes;
    if constexpr (kFp8) {
      // The block scale multiplies the stage's partial sums (of exact E4M3 weights) in F32.
      const float scale0 = __ldg(scale_[0] + kb), scale1 = __ldg(scale_[1] + kb);
      float part[T::kMTiles][kNTiles][4];
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
        for (int ni = 0; ni < kNTiles; ++ni) {
#pragma unroll
          for (int i = 0; i < 4; ++i) part[mi][ni][i] = 0.0f;
        }
      }
      MmaStage(part, sa, sb);
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
        for (int ni = 0; ni < kNTiles; ++ni) {
          const float scale = ni < kNTiles / 2 ? scale0 : scale1;
#pragma unroll
          for (int i = 0; i < 4; ++i)
            acc_[mi][ni][i] = fmaf(part[mi][ni][i], scale, acc_[mi][ni][i]);
        }
      }
    } else {
      (void)kb;
      MmaStage(acc_, sa, sb);
    }
  }

  // Rows of the tile that hold a slot; gate/up: SwiGLU to BF16, down: F32.
  __device__ void Store() const {
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int slot = begin_ + wm_ * T::kWarpM + mi * 16 + g_ + 8 * r;
        if (slot >= end_) continue;
        if constexpr (kGateUp) {
          uint16_t* dst = static_cast<uint16_t*>(a_.out) + static_cast<int64_t>(slot) * a_.n;
#pragma unroll
          for (int nj = 0; nj < kNTiles / 2; ++nj) {
            const int col = row0_ + wn_ * 16 + nj * 8 + 2 * t_;
            const float* gate = acc_[mi][nj];
            const float* up = acc_[mi][nj + kNTiles / 2];
            *reinterpret_cast<uint32_t*>(dst + col) = PackBf16(
                SiluTimes(gate[2 * r], up[2 * r]), SiluTimes(gate[2 * r + 1], up[2 * r + 1]));
          }
        } else {
          float* dst = static_cast<float*>(a_.out) + static_cast<int64_t>(slot) * a_.n;
#pragma unroll
          for (int ni = 0; ni < kNTiles; ++ni) {
            const int col = row0_ + wn_ * kWarpN + ni * 8 + 2 * t_;
            *reinterpret_cast<float2*>(dst + col) =
                make_float2(acc_[mi][ni][2 * r], acc_[mi][ni][2 * r + 1]);
          }
        }
      }
    }
  }

  const GemmArgs& a_;
  uint8_t* const smem_;
  const uint32_t s_base_;
  const int tid_, wm_, wn_, g_, t_;
  const int begin_, end_;  // the tile's slots
  const int row0_;         // first weight row (gate/up: first output column) of the CTA
  const uint8_t* b_src_[2];
  int64_t b_step_;
  int b_dst_, a_dst_, a_col_;
  const float* scale_[2];
  int a_src_[T::kAChunks];
  float acc_[T::kMTiles][kNTiles][4];
};

// A CTA per (tile, weight-row block), the blocks of one tile adjacent so they read its
// activation rows from L2 while each streams its own weights.
template <int kBlockM, int kWarpsM, bool kFp8, bool kGateUp>
__global__ void __launch_bounds__(Tiling<kBlockM, kWarpsM, kFp8>::kThreads)
    GroupedGemmKernel(const __grid_constant__ GemmArgs args) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tile_index = static_cast<int>(blockIdx.x) / args.n_blocks;
  const int nb = static_cast<int>(blockIdx.x) % args.n_blocks;
  if (tile_index >= __ldg(args.num_tiles)) return;  // CTA-uniform: past the routing's tiles
  const MoeTile tile = args.tiles[tile_index];
  GemmCta<kBlockM, kWarpsM, kFp8, kGateUp> cta(args, smem, tile, nb);
  cta.Run();
}

template <int kBlockM, int kWarpsM, bool kFp8, bool kGateUp>
cudaError_t LaunchTiling(const GemmArgs& args, int64_t ctas, cudaStream_t stream) {
  using T = Tiling<kBlockM, kWarpsM, kFp8>;
  const auto kernel = GroupedGemmKernel<kBlockM, kWarpsM, kFp8, kGateUp>;
  // Above 48 KB a kernel must opt in; cheap enough to repeat per launch (and per device).
  if (T::kSmemBytes > kDefaultSmemLimit) {
    if (const cudaError_t e = cudaFuncSetAttribute(
            kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
        e != cudaSuccess) {
      return e;
    }
  }
  kernel<<<static_cast<unsigned>(ctas), T::kThreads, T::kSmemBytes, stream>>>(args);
  return cudaGetLastError();
}

template <bool kFp8, bool kGateUp>
cudaError_t LaunchForBlockM(int block_m, const GemmArgs& args, int64_t ctas, cudaStream_t stream) {
  switch (block_m) {
    case 16:
      return LaunchTiling<16, 1, kFp8, kGateUp>(args, ctas, stream);
    case 64:
      return LaunchTiling<64, 1, kFp8, kGateUp>(args, ctas, stream);
    default:
      return LaunchTiling<128, 2, kFp8, kGateUp>(args, ctas, stream);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int32_t MoeGemmBlockM(int64_t pairs, int32_t experts) {
  const int64_t e = experts < 1 ? 1 : experts;
  if (pairs <= 16 * e) return 16;
  if (pairs <= 48 * e) return 64;
  return 128;
}

cudaError_t LaunchMoeGroupedGemm(const MoeGemmParams& p, cudaStream_t stream) {
  const bool gate_up = p.kind == MoeGemmKind::kGateUp;
  if (p.kind != MoeGemmKind::kGateUp && p.kind != MoeGemmKind::kDown) return cudaErrorInvalidValue;
  if (p.weight_type != MoeWeightType::kFp8E4M3 && p.weight_type != MoeWeightType::kBF16) {
    return cudaErrorInvalidValue;
  }
  if (p.block_m != 16 && p.block_m != 64 && p.block_m != 128) return cudaErrorInvalidValue;
  if (p.k < kBlockK || p.k % kBlockK != 0 || p.k > kMaxDim) return cudaErrorInvalidValue;
  const int64_t n_unit = gate_up ? kBlockN / 2 : kBlockN;
  if (p.n < n_unit || p.n % n_unit != 0 || p.n > kMaxDim) return cudaErrorInvalidValue;
  if (p.num_experts < 1 || p.max_tiles < 0 || p.a_rows < 0) return cudaErrorInvalidValue;
  const int64_t n_blocks = p.n / n_unit;
  if (p.max_tiles > INT32_MAX / n_blocks) return cudaErrorInvalidValue;
  if (p.max_tiles == 0) return cudaSuccess;
  if (p.experts == nullptr || p.a == nullptr || p.a_rows < 1 || p.out == nullptr ||
      p.tiles == nullptr || p.num_tiles == nullptr || (gate_up && p.slot_token == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned16(p.a) || !Aligned16(p.out)) return cudaErrorInvalidValue;

  GemmArgs args;
  args.experts = p.experts;
  args.a = reinterpret_cast<const uint8_t*>(p.a);
  args.slot_token = p.slot_token;
  args.out = p.out;
  args.tiles = p.tiles;
  args.num_tiles = p.num_tiles;
  args.n = static_cast<int32_t>(p.n);
  args.k = static_cast<int32_t>(p.k);
  args.n_blocks = static_cast<int32_t>(n_blocks);
  const int64_t ctas = p.max_tiles * n_blocks;
  const bool fp8 = p.weight_type == MoeWeightType::kFp8E4M3;
  if (fp8) {
    return gate_up ? LaunchForBlockM<true, true>(p.block_m, args, ctas, stream)
                   : LaunchForBlockM<true, false>(p.block_m, args, ctas, stream);
  }
  return gate_up ? LaunchForBlockM<false, true>(p.block_m, args, ctas, stream)
                 : LaunchForBlockM<false, false>(p.block_m, args, ctas, stream);
}

}  // namespace dserve::kernels::cuda
