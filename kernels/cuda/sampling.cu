#include "kernels/cuda/sampling.h"

#include <algorithm>
#include <cfloat>
#include <climits>

#include <math_constants.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

// The rule is engine/sampler.cc's Draw(), reorganised around one full descending sort per row:
// that sampler branches on the filters to avoid sorting the vocabulary on one thread, but every
// branch amounts to the same steps over the descending order (ties: lower id first), which is
// what the kernels below apply to all rows alike.
//   1. the candidates: the leading finite logits >= negligible (weight >= e^-60 of the top);
//   2. top_k keeps the first k of them;
//   3. top_p keeps the shortest prefix whose cumulative weight reaches top_p * its total;
//   4. min_p keeps the leading ones >= min_p's floor (at least one);
//   5. the token is the first whose cumulative weight exceeds u * the prefix's total.
// Weights are exp((logit - max) / T) in float64. Sums are in another order than the CPU's, so the
// two agree except when a comparison falls within float64 rounding.

namespace dserve::kernels::cuda {
namespace {

// The CPU sampler's cut-off: a token weighing under e^-60 of the top one could never be drawn
// (a million of them sit below the 2^-53 resolution of the sums and of the uniform).
constexpr double kNegligibleLogWeight = -60;

constexpr int kPrepareThreads = 256;
constexpr int kRowThreads = 512;
// Consecutive ranks per thread in the cumulative walk: enough to hide exp()'s latency, few enough
// that a walk ending in the first tile (top_k, a peaked distribution) reads little past its end.
constexpr int kItems = 4;
constexpr int kTile = kRowThreads * kItems;

constexpr size_t kAlign = 256;
// CUB's segmented sort over DoubleBuffers needs only its alignment slack (255 bytes in CCCL 3.0).
// A fixed reserve keeps SamplingWorkspaceBytes a pure function; CUB itself refuses the launch
// (cudaErrorInvalidValue) should a later version want more.
constexpr size_t kCubReserve = 4096;

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Logits sorted per pass: bounds the workspace (16 bytes a logit, so 512 MiB) however large the
// batch, while a pass still gives every SM a few rows to sort (259 of DeepSeek-V3's 129,280).
constexpr int64_t kLogitsPerPass = int64_t{1} << 25;

// CUB's segmented sort counts items in int, and so do the row offsets below: a pass holds at
// most max(vocab, kLogitsPerPass) logits.
bool ShapeFits(int64_t rows, int64_t vocab) { return rows >= 1 && vocab >= 1 && vocab <= INT_MAX; }

int64_t RowsPerPass(int64_t rows, int64_t vocab) {
  return std::min(rows, std::max<int64_t>(1, kLogitsPerPass / vocab));
}

// Byte offsets into the workspace, from its first 256-byte aligned address.
struct Layout {
  size_t keys[2], ids[2], begin, end, cub, total;
};

Layout MakeLayout(int64_t rows, int64_t vocab) {
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(vocab);
  Layout l{};
  size_t at = 0;
  for (size_t& keys : l.keys) {
    keys = at;
    at += AlignUp(n * sizeof(float));
  }
  for (size_t& ids : l.ids) {
    ids = at;
    at += AlignUp(n * sizeof(int32_t));
  }
  l.begin = at;
  at += AlignUp(static_cast<size_t>(rows) * sizeof(int));
  l.end = at;
  at += AlignUp(static_cast<size_t>(rows) * sizeof(int));
  l.cub = at;
  at += kCubReserve;
  l.total = at + kAlign;  // the caller's pointer may need aligning up
  return l;
}

enum class RowMode { kInvalid, kGreedy, kSample };

// Both the CPU's greedy test (-0 included) and the temperatures it would refuse with a CHECK.
__device__ RowMode Classify(const SamplingRow& p) {
  if (p.temperature == 0.0f) return RowMode::kGreedy;
  if (!(p.temperature > 0.0f && p.temperature <= FLT_MAX)) return RowMode::kInvalid;
  return RowMode::kSample;
}

// Sort input for the rows that draw: NaN becomes -inf, so it sorts last with the tokens that can
// never be chosen instead of first (CUB orders a positive NaN above +inf), and -0 becomes +0,
// which the CPU's comparisons treat as equal (CUB does too, but the order should not rest on
// that). Greedy and invalid rows get an empty segment, so the sort skips them.
__global__ void PrepareKernel(const float* __restrict__ logits, int vocab,
                              const SamplingRow* __restrict__ params, float* __restrict__ keys,
                              int32_t* __restrict__ ids, int* __restrict__ begin,
                              int* __restrict__ end) {
  const int row = blockIdx.x;
  const int offset = row * vocab;  // a pass holds at most INT_MAX logits (RowsPerPass)
  const bool sorted = Classify(params[row]) == RowMode::kSample;
  if (blockIdx.y == 0 && threadIdx.x == 0) {
    begin[row] = offset;
    end[row] = sorted ? offset + vocab : offset;
  }
  if (!sorted) return;
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; c < vocab;
       c += stride) {
    const float l = logits[offset + c];
    keys[offset + c] = l != l ? -CUDART_INF_F : (l == 0.0f ? 0.0f : l);
    ids[offset + c] = static_cast<int32_t>(c);
  }
}

// A candidate's weight relative to the top token's, as the CPU's Weigher computes it (its exp()
// is a polynomial within 2 ulp; CUDA's is within 1: the weights agree to float64 rounding).
struct Weigher {
  double max_logit;
  double inv_temperature;

  __device__ double operator()(float logit) const {
    const double x = (static_cast<double>(logit) - max_logit) * inv_temperature;
    return exp(x < -700.0 ? -700.0 : x);
  }
};

// The smallest float f >= x, so that `logit >= f` decides `(double)logit >= x` exactly: the
// filters' floors are decided on the float logits, as the CPU decides them.
__device__ float FloatFloor(double x) {
  if (!(x > -static_cast<double>(FLT_MAX))) return -CUDART_INF_F;
  float f = __double2float_rn(x);
  if (static_cast<double>(f) < x) f = nextafterf(f, CUDART_INF_F);
  return f;
}

// How many leading keys (sorted descending, NaN already -inf) are finite and >= bar. Both tests
// hold on a prefix, so its end is found by rounds of one probe per thread, each round narrowing
// the interval kRowThreads-fold: two rounds for DeepSeek-V3's vocabulary. Every thread calls it
// and gets the count.
__device__ int BlockCountLeading(const float* keys, int n, float bar) {
  int64_t lo = 0, hi = n;  // keys[0, lo) pass, keys[hi, n) fail
  while (lo < hi) {
    const int64_t span = hi - lo;
    // Probe t looks at lo + ceil((t + 1) span / threads) - 1: increasing in t, the last at hi - 1.
    auto probe = [&](int64_t t) {
      return lo + ((t + 1) * span + kRowThreads - 1) / kRowThreads - 1;
    };
    const float key = keys[probe(threadIdx.x)];
    const int passed = __syncthreads_count(key >= bar && key > -CUDART_INF_F);
    // Probes [0, passed) passed; the boundary lies after the last of them, at or before the next.
    if (passed > 0) lo = probe(passed - 1) + 1;
    if (passed < kRowThreads) hi = probe(passed);
  }
  return static_cast<int>(lo);
}

// What a drawing row keeps before top_p. Every thread computes the same plan.
struct RowPlan {
  Weigher weigh;
  int kept;        // leading candidates after top_k; 0: nothing can be sampled
  int min_p_kept;  // leading candidates at or above min_p's floor
};

__device__ RowPlan Plan(const float* keys, int vocab, const SamplingRow& p) {
  RowPlan plan{};
  const float max_logit = keys[0];
  // Every logit -inf or NaN: nothing to draw. +inf: the CPU refuses it (the weights are NaN).
  if (!(max_logit > -CUDART_INF_F) || max_logit == CUDART_INF_F) return plan;
  const double temperature = p.temperature;
  plan.weigh = {max_logit, 1.0 / temperature};
  // The products and sums rounded one by one, as the CPU's x86-64 build does (no FMA), so that
  // the floors come out as the same floats.
  const float negligible =
      FloatFloor(__dadd_rn(max_logit, __dmul_rn(kNegligibleLogWeight, temperature)));
  // p_i >= min_p * p_max  <=>  logit_i >= max + T ln(min_p).
  float min_p_floor = negligible;
  if (p.min_p > 0.0f) {
    const double log_min_p = log(static_cast<double>(p.min_p));
    min_p_floor =
        fmaxf(negligible, FloatFloor(__dadd_rn(max_logit, __dmul_rn(temperature, log_min_p))));
  }
  // >= 1: the top token is always a candidate.
  const int candidates = BlockCountLeading(keys, vocab, negligible);
  plan.kept = p.top_k > 0 && p.top_k < candidates ? p.top_k : candidates;
  plan.min_p_kept =
      min_p_floor > negligible ? BlockCountLeading(keys, vocab, min_p_floor) : candidates;
  return plan;
}

struct ArgMaxPair {
  float value;
  int id;
};

// Larger value first, then the lower id; NaN never enters (see BlockArgMax).
struct ArgMaxOp {
  __device__ ArgMaxPair operator()(const ArgMaxPair& a, const ArgMaxPair& b) const {
    if (a.value > b.value) return a;
    if (b.value > a.value) return b;
    return a.id <= b.id ? a : b;
  }
};

using BlockReduceDouble = cub::BlockReduce<double, kRowThreads>;
using BlockScanDouble = cub::BlockScan<double, kRowThreads>;
using BlockReduceArgMax = cub::BlockReduce<ArgMaxPair, kRowThreads>;

struct RowShared {
  union {
    BlockReduceDouble::TempStorage reduce;
    BlockScanDouble::TempStorage scan;
    BlockReduceArgMax::TempStorage argmax;
  } cub;
  double total;
  int first;
};

// The lowest id of the largest logit, or -1 when all are -inf or NaN (the CPU's ArgMax): +inf
// counts, -0 equals +0. Valid in thread 0.
__device__ int BlockArgMax(const float* row, int vocab, RowShared& s) {
  ArgMaxPair best{-CUDART_INF_F, INT_MAX};
  // Ascending ids per thread and a strict test: a thread keeps the lowest id of its maximum.
  for (int64_t j = threadIdx.x; j < vocab; j += kRowThreads) {
    const float l = row[j];
    if (l > best.value) best = {l, static_cast<int>(j)};
  }
  best = BlockReduceArgMax(s.cub.argmax).Reduce(best, ArgMaxOp());
  return best.value > -CUDART_INF_F ? best.id : -1;
}

// Sum of the weights of ranks [0, n), on every thread.
__device__ double BlockWeightSum(const float* keys, int n, const Weigher& weigh, RowShared& s) {
  double local = 0;
  for (int64_t j = threadIdx.x; j < n; j += kRowThreads) local += weigh(keys[j]);
  __syncthreads();  // s is free: every thread is past its previous use
  const double total = BlockReduceDouble(s.cub.reduce).Sum(local);
  if (threadIdx.x == 0) s.total = total;
  __syncthreads();
  return s.total;
}

// The first rank j < n whose cumulative weight passes target (> when kStrict, as the draw's test,
// >= otherwise, as top_p's), or n - 1 when rounding leaves the sum short of it: the CPU falls
// back to the last candidate with weight, and every candidate weighs at least e^-60. Tiles of
// kTile consecutive ranks, each thread summing kItems of them: the walk stops at the first tile
// that crosses, on every thread.
template <bool kStrict>
__device__ int FirstCrossing(const float* keys, int n, const Weigher& weigh, double target,
                             RowShared& s) {
  __syncthreads();
  if (threadIdx.x == 0) s.first = INT_MAX;
  __syncthreads();
  double carry = 0;  // the weight of the tiles before this one
  for (int64_t base = 0; base < n; base += kTile) {
    const int64_t begin = base + static_cast<int64_t>(threadIdx.x) * kItems;
    double w[kItems];
    double local = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      w[i] = begin + i < n ? weigh(keys[begin + i]) : 0.0;
      local += w[i];
    }
    double before, tile_total;
    BlockScanDouble(s.cub.scan).ExclusiveSum(local, before, tile_total);
    double cumulative = carry + before;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      cumulative += w[i];
      if (begin + i < n && (kStrict ? cumulative > target : cumulative >= target)) {
        atomicMin(&s.first, static_cast<int>(begin + i));
        break;
      }
    }
    __syncthreads();
    const int first = s.first;
    if (first != INT_MAX) return first;
    carry += tile_total;
    // Every thread has read s.first before the next tile may set it (and is done with the scan's
    // storage).
    __syncthreads();
  }
  return n - 1;
}

// One block per row: greedy rows take the argmax of their logits, drawing rows walk their sorted
// keys.
__global__ void __launch_bounds__(kRowThreads)
    SampleRowsKernel(const float* __restrict__ logits, int vocab,
                     const SamplingRow* __restrict__ params, const float* __restrict__ sorted_keys,
                     const int32_t* __restrict__ sorted_ids, int32_t* __restrict__ tokens) {
  __shared__ RowShared s;
  const int row = blockIdx.x;
  const int64_t offset = static_cast<int64_t>(row) * vocab;
  const SamplingRow p = params[row];
  const RowMode mode = Classify(p);
  if (mode == RowMode::kInvalid) {
    if (threadIdx.x == 0) tokens[row] = -1;
    return;
  }
  if (mode == RowMode::kGreedy) {
    const int token = BlockArgMax(logits + offset, vocab, s);
    if (threadIdx.x == 0) tokens[row] = token;
    return;
  }

  const float* keys = sorted_keys + offset;
  const RowPlan plan = Plan(keys, vocab, p);
  if (plan.kept == 0) {
    if (threadIdx.x == 0) tokens[row] = -1;
    return;
  }
  int kept = plan.kept;
  if (p.top_p < 1.0f && kept > 1) {
    const double total = BlockWeightSum(keys, kept, plan.weigh, s);
    kept = FirstCrossing<false>(keys, kept, plan.weigh, p.top_p * total, s) + 1;
  }
  if (plan.min_p_kept < kept) kept = plan.min_p_kept > 1 ? plan.min_p_kept : 1;
  int rank = 0;
  if (kept > 1) {
    const double total = BlockWeightSum(keys, kept, plan.weigh, s);
    rank = FirstCrossing<true>(keys, kept, plan.weigh, p.uniform * total, s);
  }
  if (threadIdx.x == 0) tokens[row] = sorted_ids[offset + rank];
}

}  // namespace

size_t SamplingWorkspaceBytes(int64_t rows, int64_t vocab) {
  return ShapeFits(rows, vocab) ? MakeLayout(RowsPerPass(rows, vocab), vocab).total : 0;
}

cudaError_t LaunchSampling(const SamplingParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.vocab < 1) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  if (!ShapeFits(p.rows, p.vocab)) return cudaErrorInvalidValue;
  if (p.logits == nullptr || p.params == nullptr || p.tokens == nullptr || p.workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  const int64_t rows_per_pass = RowsPerPass(p.rows, p.vocab);
  const Layout layout = MakeLayout(rows_per_pass, p.vocab);
  if (p.workspace_bytes < layout.total) return cudaErrorInvalidValue;

  const uintptr_t address = reinterpret_cast<uintptr_t>(p.workspace);
  char* base = reinterpret_cast<char*>((address + kAlign - 1) / kAlign * kAlign);
  float* keys[2] = {reinterpret_cast<float*>(base + layout.keys[0]),
                    reinterpret_cast<float*>(base + layout.keys[1])};
  int32_t* ids[2] = {reinterpret_cast<int32_t*>(base + layout.ids[0]),
                     reinterpret_cast<int32_t*>(base + layout.ids[1])};
  int* begin = reinterpret_cast<int*>(base + layout.begin);
  int* end = reinterpret_cast<int*>(base + layout.end);
  const int vocab = static_cast<int>(p.vocab);
  const int64_t chunks = (p.vocab + kPrepareThreads * 8 - 1) / (kPrepareThreads * 8);

  // Passes reuse the workspace: the stream orders them.
  for (int64_t first = 0; first < p.rows; first += rows_per_pass) {
    const int rows = static_cast<int>(std::min(rows_per_pass, p.rows - first));
    const float* logits = p.logits + first * p.vocab;
    const SamplingRow* params = p.params + first;
    const dim3 prepare_grid(rows, static_cast<unsigned>(std::min<int64_t>(chunks, 65535)));
    PrepareKernel<<<prepare_grid, kPrepareThreads, 0, stream>>>(logits, vocab, params, keys[0],
                                                                ids[0], begin, end);
    cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;

    // Stable, so equal logits keep ascending ids: the CPU's tie order. The DoubleBuffer form
    // sorts back and forth between the two buffers and says on the host which holds the result.
    cub::DoubleBuffer<float> sorted_keys(keys[0], keys[1]);
    cub::DoubleBuffer<int32_t> sorted_ids(ids[0], ids[1]);
    size_t cub_bytes = kCubReserve;
    error = cub::DeviceSegmentedRadixSort::SortPairsDescending(
        base + layout.cub, cub_bytes, sorted_keys, sorted_ids, rows * vocab, rows, begin, end, 0,
        static_cast<int>(sizeof(float) * 8), stream);
    if (error != cudaSuccess) return error;

    SampleRowsKernel<<<rows, kRowThreads, 0, stream>>>(logits, vocab, params, sorted_keys.Current(),
                                                       sorted_ids.Current(), p.tokens + first);
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  return cudaSuccess;
}

}  // namespace dserve::kernels::cuda
