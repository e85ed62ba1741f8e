// The MoE kernels of kernels/cuda/moe/: the dispatch against a host counting sort (exactly: every
// count, offset, slot, inverse entry and tile), each grouped GEMM against a float64 product of
// the same BF16 activations and the exact weights (tightly), and the whole chain
// (LaunchMoeExperts) against CpuOps::MoeExperts on random inputs: tiny and V3-like reduced
// shapes, FP8 and BF16 experts, uniform, skewed and sparse routing, 1 to 300 tokens, dropped
// ids. Outputs and workspaces start as NaN (0xFF bytes), so an element never written fails;
// controls check that the tolerances would catch a token sent to a wrong expert. Also: every
// tile size gives bit-identical results, and a token's output does not depend on the batch.
// The argument checks run without a GPU; the rest skip, saying so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/moe/combine.h"
#include "kernels/cuda/moe/dispatch.h"
#include "kernels/cuda/moe/grouped_gemm.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_compare.h"
#include "tests/support/test_weight.h"

namespace dserve::kernels::cuda {
namespace {

using dserve::testing::Agreement;
using dserve::testing::Compare;
using dserve::testing::ExpectAgree;
using dserve::testing::TestWeight;

// Against CpuOps (F32 activations, exact weights, F32 sums): the kernels round x and the SwiGLU
// outputs to BF16 (8 significant bits, round to nearest even: at most 2^-8 = 0.39% of a value,
// about 0.16% RMS); weights enter exactly. The gate and up products then carry about 0.16% RMS
// relative error, SwiGLU passes it on with a gain of about 1.4 (RMS over normal gate and up
// values), and the rounding of its output adds 0.16%: about 0.3% RMS of a typical output of
// the down product, which the positive routing weights keep. Cosine 1 - 0.003^2 / 2 =
// 0.9999955 expected, 0.9999 (1.4% RMS) allowed; the largest error against the largest output
// about 0.3% (both are extremes of as many draws), 1e-2 allowed. The emulated kernels (see
// kernels/cuda/moe/README.md) gave at most rel 4.3e-3 and cosine at least 0.999994 over these
// cases. A token sent to another expert changes its whole row by about its own size: the
// controls gave rel 0.084 to 1.0.
constexpr double kRel = 1e-2;
constexpr double kCosine = 0.9999;
// The grouped GEMMs alone, against float64 on the very BF16 inputs and exact weights: only F32
// accumulation differs (emulated: rel 2e-7), and for gate/up the final BF16 rounding of the
// SwiGLU output, at most 2^-8 of each value (emulated: rel 3.0e-3, cosine 0.9999986).
constexpr double kDownRel = 1e-5, kDownCosine = 0.9999999;
constexpr double kGateUpRel = 5e-3, kGateUpCosine = 0.99999;

bool Passes(const Agreement& a, double rel, double cosine) {
  return a.non_finite == 0 && a.rel <= rel && a.cosine >= cosine;
}

#define DSERVE_SKIP_WITHOUT_GPU()                                 \
  do {                                                            \
    if (const absl::Status s = DeviceAvailable(); !s.ok()) {      \
      GTEST_SKIP() << s.message() << " (the GPU tests need one)"; \
    }                                                             \
  } while (0)

Tensor ToDevice(const void* src, size_t bytes) {
  absl::StatusOr<Tensor> t =
      DeviceTensor(DType::kU8, {static_cast<int64_t>(std::max<size_t>(bytes, 16))});
  DSERVE_CHECK(t.ok()) << t.status().ToString();
  if (bytes > 0) {
    const absl::Status s = CopyToDevice(t->raw(), src, bytes);
    DSERVE_CHECK(s.ok()) << s.ToString();
  }
  return *std::move(t);
}

template <typename T>
Tensor ToDevice(const std::vector<T>& v) {
  return ToDevice(v.data(), v.size() * sizeof(T));
}

// A device buffer of `bytes`, every byte `fill` (0xFF: NaN in F32 and BF16, -1 in I32).
Tensor Filled(size_t bytes, unsigned char fill = 0xFF) {
  absl::StatusOr<Tensor> t =
      DeviceTensor(DType::kU8, {static_cast<int64_t>(std::max<size_t>(bytes, 16))});
  DSERVE_CHECK(t.ok()) << t.status().ToString();
  const absl::Status s = FillDevice(t->raw(), fill, t->bytes());
  DSERVE_CHECK(s.ok()) << s.ToString();
  return *std::move(t);
}

template <typename T>
std::vector<T> Read(const Tensor& device, size_t count) {
  DSERVE_CHECK(Synchronize().ok());
  std::vector<T> v(count);
  if (count > 0) {
    const absl::Status s = CopyToHost(v.data(), device.raw(), count * sizeof(T));
    DSERVE_CHECK(s.ok()) << s.ToString();
  }
  return v;
}

// ---- Routing ------------------------------------------------------------------------------

enum class Routing {
  kUniform,  // top_k distinct experts per token, uniformly
  kSkewed,   // expert 3 among the choices of 7 tokens in 8: it gets most of the rows
  kSparse,   // only a handful of experts: the others get no tokens
};
const char* RoutingName(Routing r) {
  switch (r) {
    case Routing::kUniform:
      return "uniform";
    case Routing::kSkewed:
      return "skewed";
    case Routing::kSparse:
      return "sparse";
  }
  return "?";
}

// ids [T, K], distinct experts per token as a router gives them.
std::vector<int32_t> RouteByHand(Routing routing, int64_t T, int K, int E, std::mt19937& rng) {
  std::vector<int32_t> pool(E);
  std::iota(pool.begin(), pool.end(), 0);
  if (routing == Routing::kSparse) {
    std::shuffle(pool.begin(), pool.end(), rng);
    pool.resize(std::min(E, std::max(K, E / 4)));
  }
  std::vector<int32_t> ids(T * K);
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(pool.begin(), pool.end(), rng);
    if (routing == Routing::kSkewed && t % 8 != 7) {
      std::iter_swap(pool.begin() + t % K, std::find(pool.begin(), pool.end(), 3));
    }
    std::copy_n(pool.begin(), K, ids.begin() + t * K);
  }
  return ids;
}

std::vector<float> RoutingWeights(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  std::vector<float> w(n);
  for (float& x : w) x = weight(rng);
  return w;
}

// The dispatch computed on the host by a sequential stable counting sort.
struct HostRouting {
  std::vector<int32_t> counts, offsets, slot_token, slot_pair, pair_slot;
  std::vector<MoeTile> tiles;
  int32_t slots() const { return offsets.back(); }
};

HostRouting HostDispatch(const std::vector<int32_t>& ids, int K, int E, int block_m) {
  HostRouting r;
  r.counts.assign(E, 0);
  for (int32_t e : ids) {
    if (e >= 0 && e < E) ++r.counts[e];
  }
  r.offsets.assign(E + 1, 0);
  for (int e = 0; e < E; ++e) r.offsets[e + 1] = r.offsets[e] + r.counts[e];
  std::vector<int32_t> next(r.offsets.begin(), r.offsets.end() - 1);
  r.slot_token.assign(r.slots(), -1);
  r.slot_pair.assign(r.slots(), -1);
  r.pair_slot.assign(ids.size(), -1);
  for (size_t p = 0; p < ids.size(); ++p) {
    const int32_t e = ids[p];
    if (e < 0 || e >= E) continue;
    const int32_t s = next[e]++;
    r.slot_token[s] = static_cast<int32_t>(p / K);
    r.slot_pair[s] = static_cast<int32_t>(p);
    r.pair_slot[p] = s;
  }
  for (int e = 0; e < E; ++e) {
    for (int32_t b = r.offsets[e]; b < r.offsets[e + 1]; b += block_m) {
      r.tiles.push_back(MoeTile{e, b, std::min(b + block_m, r.offsets[e + 1]), 0});
    }
  }
  return r;
}

// ---- Experts ------------------------------------------------------------------------------

const char* TypeName(DType dtype) { return dtype == DType::kF8E4M3 ? "FP8" : "BF16"; }

// FP8 element codes are drawn as normal * kFp8Spread (most of E4M3's range, subnormals
// included); each 128x128 block's scale, up to 4x apart from its neighbours', brings them back
// to about `stddev`, so a block read with another's scale shows.
constexpr float kFp8Spread = 48.0f;

TestWeight RandomWeight(DType dtype, int64_t rows, int64_t cols, float stddev, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = rows * cols;
  std::vector<uint8_t> bytes(n * DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == DType::kF8E4M3) {
      bytes[i] = FloatToFp8E4M3(normal(rng) * kFp8Spread);
    } else {
      const uint16_t h = FloatToBf16(normal(rng) * stddev);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  std::vector<float> scales;
  if (dtype == DType::kF8E4M3) {
    std::uniform_real_distribution<float> octaves(-1.0f, 1.0f);
    scales.resize(dserve::testing::NumBlockScales(rows, cols));
    for (float& s : scales) s = stddev / kFp8Spread * std::exp2(octaves(rng));
  }
  return dserve::testing::MakeTestWeight(dtype, rows, cols, std::move(bytes), std::move(scales));
}

// Experts on the host (for CpuOps and the float64 references) and on the device (each weight
// its own allocation, as the loader places them), with the device table the kernels read.
struct Experts {
  DType dtype = DType::kF8E4M3;
  std::vector<TestWeight> host;  // gate, up, down of each expert
  std::vector<MlpWeights> mlp;   // views of `host` for CpuOps
  std::vector<Tensor> storage;   // device bytes and scales
  Tensor table;                  // device [E] MoeExpertWeights
  MoeWeightType type() const {
    return dtype == DType::kF8E4M3 ? MoeWeightType::kFp8E4M3 : MoeWeightType::kBF16;
  }
  const MoeExpertWeights* device_table() const {
    return static_cast<const MoeExpertWeights*>(table.raw());
  }
  const TestWeight& gate(int e) const { return host[3 * e]; }
  const TestWeight& up(int e) const { return host[3 * e + 1]; }
  const TestWeight& down(int e) const { return host[3 * e + 2]; }
};

Experts MakeExperts(DType dtype, int E, int64_t hidden, int64_t inter, std::mt19937& rng) {
  Experts ex;
  ex.dtype = dtype;
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(hidden));
  const float out_scale = 1.0f / std::sqrt(static_cast<float>(inter));
  for (int e = 0; e < E; ++e) {
    ex.host.push_back(RandomWeight(dtype, inter, hidden, in_scale, rng));
    ex.host.push_back(RandomWeight(dtype, inter, hidden, in_scale, rng));
    ex.host.push_back(RandomWeight(dtype, hidden, inter, out_scale, rng));
  }
  std::vector<MoeExpertWeights> table(E);
  auto place = [&ex](const TestWeight& w, const void** data, const float** scale) {
    ex.storage.push_back(ToDevice(w.bytes));
    *data = ex.storage.back().raw();
    if (!w.scales.empty()) {
      ex.storage.push_back(ToDevice(w.scales));
      *scale = static_cast<const float*>(ex.storage.back().raw());
    }
  };
  for (int e = 0; e < E; ++e) {
    place(ex.gate(e), &table[e].gate, &table[e].gate_scale);
    place(ex.up(e), &table[e].up, &table[e].up_scale);
    place(ex.down(e), &table[e].down, &table[e].down_scale);
    ex.mlp.push_back(MlpWeights{ex.gate(e).w, ex.up(e).w, ex.down(e).w});
  }
  ex.table = ToDevice(table);
  return ex;
}

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// ---- The chain ----------------------------------------------------------------------------

struct Problem {
  int64_t tokens = 0, hidden = 0, inter = 0;
  int top_k = 0;
  std::vector<float> x;        // [tokens, hidden]
  std::vector<int32_t> ids;    // [tokens, top_k]
  std::vector<float> weights;  // [tokens, top_k]
};

// LaunchMoeExperts on the device; the output and the workspace start as NaN.
std::vector<float> RunOnDevice(const Experts& ex, const Problem& p, int32_t block_m = 0) {
  const Tensor x = ToDevice(p.x), ids = ToDevice(p.ids), weights = ToDevice(p.weights);
  Tensor out = Filled(p.x.size() * sizeof(float));
  MoeExpertsParams m;
  m.x = static_cast<const float*>(x.raw());
  m.ids = static_cast<const int32_t*>(ids.raw());
  m.weights = static_cast<const float*>(weights.raw());
  m.out = static_cast<float*>(out.raw());
  m.tokens = p.tokens;
  m.hidden = p.hidden;
  m.inter = p.inter;
  m.top_k = p.top_k;
  m.num_experts = static_cast<int32_t>(ex.mlp.size());
  m.weight_type = ex.type();
  m.experts = ex.device_table();
  m.block_m = block_m;
  m.workspace_bytes = MoeExpertsWorkspaceBytes(m);
  DSERVE_CHECK(m.workspace_bytes > 0) << "shape out of range";
  Tensor workspace = Filled(m.workspace_bytes);
  m.workspace = workspace.raw();
  const cudaError_t e = LaunchMoeExperts(m, nullptr);
  DSERVE_CHECK(e == cudaSuccess) << "LaunchMoeExperts: " << cudaGetErrorName(e);
  return Read<float>(out, p.x.size());
}

// CpuOps::MoeExperts on the same inputs. Ids out of range become expert 0 with weight 0 (the
// kernels drop them; the CPU op refuses them).
std::vector<float> RunOnCpu(cpu::CpuOps& cpu, const Experts& ex, const Problem& p) {
  const int E = static_cast<int>(ex.mlp.size());
  Tensor x = Tensor::Zeros(DType::kF32, {p.tokens, p.hidden});
  Tensor ids = Tensor::Zeros(DType::kI32, {p.tokens, p.top_k});
  Tensor weights = Tensor::Zeros(DType::kF32, {p.tokens, p.top_k});
  std::copy(p.x.begin(), p.x.end(), x.data<float>());
  for (size_t i = 0; i < p.ids.size(); ++i) {
    const bool valid = p.ids[i] >= 0 && p.ids[i] < E;
    ids.data<int32_t>()[i] = valid ? p.ids[i] : 0;
    weights.data<float>()[i] = valid ? p.weights[i] : 0.0f;
  }
  Tensor out = Tensor::Zeros(DType::kF32, {p.tokens, p.hidden});
  cpu.MoeExperts(x, ex.mlp, ids, weights, out);
  return std::vector<float>(out.data<float>(), out.data<float>() + out.numel());
}

Problem MakeProblem(Routing routing, int64_t T, int64_t hidden, int64_t inter, int K, int E,
                    std::mt19937& rng) {
  Problem p;
  p.tokens = T;
  p.hidden = hidden;
  p.inter = inter;
  p.top_k = K;
  p.x = RandomVector(T * hidden, rng);
  p.ids = RouteByHand(routing, T, K, E, rng);
  p.weights = RoutingWeights(T * K, rng);
  return p;
}

// ---- Tests --------------------------------------------------------------------------------

TEST(MoeKernelsArgsTest, SizesAndTileBounds) {
  MoeDispatchShape s{1, 8, 256, 16};
  EXPECT_EQ(MoeMaxTiles(s), 8);  // one row per tile at most
  s = {4096, 8, 256, 128};
  EXPECT_EQ(MoeMaxTiles(s), 256 + 256);
  s = {0, 8, 256, 16};
  EXPECT_EQ(MoeMaxTiles(s), 0);
  EXPECT_GT(MoeDispatchWorkspaceBytes(s), 0u);
  s = {300, 4, 16, 64};
  const size_t bytes = MoeDispatchWorkspaceBytes(s);
  std::vector<uint8_t> fake(bytes + 256);
  uint8_t* base =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(fake.data()) + 255) / 256 * 256);
  const MoeDispatchOutputs o = MoeDispatchViews(base, s);
  for (const void* p :
       {static_cast<const void*>(o.counts), static_cast<const void*>(o.offsets),
        static_cast<const void*>(o.slot_token), static_cast<const void*>(o.slot_pair),
        static_cast<const void*>(o.pair_slot), static_cast<const void*>(o.tiles),
        static_cast<const void*>(o.num_tiles)}) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
    EXPECT_LT(static_cast<const uint8_t*>(p), base + bytes);
  }
  EXPECT_LE(reinterpret_cast<const uint8_t*>(o.num_tiles + 1), base + bytes);
  EXPECT_EQ(MoeGemmBlockM(8, 256), 16);          // one decode token
  EXPECT_EQ(MoeGemmBlockM(256 * 8, 256), 16);    // 8 rows per expert
  EXPECT_EQ(MoeGemmBlockM(1024 * 8, 256), 64);   // 32
  EXPECT_EQ(MoeGemmBlockM(4096 * 8, 256), 128);  // 128
}

TEST(MoeKernelsArgsTest, RefusesBadArgumentsBeforeLaunching) {
  alignas(256) static uint8_t workspace[1 << 16];
  const int32_t ids[8] = {};
  const MoeDispatchShape good{2, 4, 16, 16};
  const size_t bytes = MoeDispatchWorkspaceBytes(good);
  ASSERT_LE(bytes, sizeof(workspace));
  for (const MoeDispatchShape bad :
       {MoeDispatchShape{2, 0, 16, 16}, MoeDispatchShape{2, 17, 16, 16},
        MoeDispatchShape{2, 4, 0, 16}, MoeDispatchShape{2, 4, 1025, 16},
        MoeDispatchShape{2, 4, 16, 0}, MoeDispatchShape{-1, 4, 16, 16},
        MoeDispatchShape{int64_t{1} << 30, 4, 16, 16}}) {
    EXPECT_EQ(LaunchMoeDispatch(ids, bad, workspace, sizeof(workspace), nullptr),
              cudaErrorInvalidValue)
        << bad.tokens << " tokens, top " << bad.top_k << " of " << bad.experts << ", tiles of "
        << bad.block_m;
  }
  EXPECT_EQ(LaunchMoeDispatch(ids, good, workspace, bytes - 1, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LaunchMoeDispatch(ids, good, workspace + 16, bytes, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LaunchMoeDispatch(ids, good, nullptr, bytes, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LaunchMoeDispatch(nullptr, good, workspace, bytes, nullptr), cudaErrorInvalidValue);

  // The grouped GEMM: a valid call with max_tiles 0 launches nothing, so it succeeds anywhere.
  alignas(16) static uint16_t a[16];
  alignas(16) static float out[16];
  static const MoeTile tiles[1] = {};
  static const int32_t count[1] = {};
  static const MoeExpertWeights experts[1] = {};
  MoeGemmParams g;
  g.kind = MoeGemmKind::kDown;
  g.experts = experts;
  g.num_experts = 1;
  g.n = 256;
  g.k = 128;
  g.a = a;
  g.a_rows = 1;
  g.out = out;
  g.tiles = tiles;
  g.num_tiles = count;
  g.max_tiles = 0;
  g.block_m = 16;
  EXPECT_EQ(LaunchMoeGroupedGemm(g, nullptr), cudaSuccess);
  auto refused = [&](const char* what, auto change) {
    MoeGemmParams b = g;
    b.max_tiles = 1;
    change(b);
    EXPECT_EQ(LaunchMoeGroupedGemm(b, nullptr), cudaErrorInvalidValue) << what;
  };
  refused("k not a multiple of 128", [](MoeGemmParams& b) { b.k = 192; });
  refused("k 0", [](MoeGemmParams& b) { b.k = 0; });
  refused("down n not a multiple of 128", [](MoeGemmParams& b) { b.n = 192; });
  refused("gate/up n not a multiple of 64", [](MoeGemmParams& b) {
    b.kind = MoeGemmKind::kGateUp;
    b.slot_token = count;
    b.n = 96;
  });
  refused("gate/up without slot_token", [](MoeGemmParams& b) { b.kind = MoeGemmKind::kGateUp; });
  refused("block_m 32", [](MoeGemmParams& b) { b.block_m = 32; });
  refused("no experts", [](MoeGemmParams& b) { b.experts = nullptr; });
  refused("misaligned activations", [](MoeGemmParams& b) { b.a = a + 1; });
  refused("misaligned output", [](MoeGemmParams& b) { b.out = out + 1; });
  refused("no tile count", [](MoeGemmParams& b) { b.num_tiles = nullptr; });
  refused("unknown weight type",
          [](MoeGemmParams& b) { b.weight_type = static_cast<MoeWeightType>(7); });

  EXPECT_EQ(LaunchMoeCombine(out, count, out, 0, 4, 256, out, nullptr), cudaSuccess);
  EXPECT_EQ(LaunchMoeCombine(out, count, out, 1, 4, 6, out, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LaunchMoeCombine(out, count, out, 1, 0, 256, out, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LaunchMoeCombine(nullptr, count, out, 1, 4, 256, out, nullptr), cudaErrorInvalidValue);

  MoeExpertsParams m;
  m.tokens = 0;
  m.hidden = 256;
  m.inter = 128;
  m.top_k = 4;
  m.num_experts = 16;
  EXPECT_EQ(LaunchMoeExperts(m, nullptr), cudaSuccess);  // no tokens: nothing to do
  EXPECT_GT(MoeExpertsWorkspaceBytes(m), 0u);
  m.tokens = 3;
  EXPECT_EQ(LaunchMoeExperts(m, nullptr), cudaErrorInvalidValue);  // no pointers
  m.hidden = 200;
  EXPECT_EQ(MoeExpertsWorkspaceBytes(m), 0u);
  EXPECT_EQ(LaunchMoeExperts(m, nullptr), cudaErrorInvalidValue);
  m.hidden = 256;
  m.block_m = 32;
  EXPECT_EQ(MoeExpertsWorkspaceBytes(m), 0u);
}

TEST(MoeDispatchTest, MatchesAHostCountingSortExactly) {
  DSERVE_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t tokens;
    int top_k, experts, block_m;
    Routing routing;
    int dropped;  // ids replaced by -1 or `experts`
  };
  const std::vector<Case> cases = {
      {0, 8, 256, 16, Routing::kUniform, 0},     {1, 8, 256, 16, Routing::kUniform, 0},
      {7, 4, 16, 16, Routing::kSkewed, 0},       {64, 8, 256, 16, Routing::kUniform, 0},
      {300, 6, 64, 64, Routing::kSparse, 0},     {300, 4, 16, 128, Routing::kSkewed, 0},
      {5000, 8, 256, 128, Routing::kUniform, 0}, {5000, 8, 256, 16, Routing::kSkewed, 0},
      {33, 16, 1024, 16, Routing::kUniform, 0},  {900, 1, 3, 1, Routing::kUniform, 0},
      {257, 8, 160, 64, Routing::kUniform, 40},  {64, 4, 16, 16, Routing::kSparse, 7},
  };
  std::mt19937 rng(11);
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.tokens, " tokens, top ", c.top_k, " of ", c.experts, ", ",
                              RoutingName(c.routing), ", tiles of ", c.block_m, ", ", c.dropped,
                              " dropped"));
    std::vector<int32_t> ids = RouteByHand(c.routing, c.tokens, c.top_k, c.experts, rng);
    for (int i = 0; i < c.dropped; ++i) {
      ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)] =
          i % 2 == 0 ? -1 : c.experts;
    }
    const MoeDispatchShape shape{c.tokens, c.top_k, c.experts, c.block_m};
    const HostRouting want = HostDispatch(ids, c.top_k, c.experts, c.block_m);
    const Tensor d_ids = ToDevice(ids);
    const size_t bytes = MoeDispatchWorkspaceBytes(shape);
    Tensor workspace = Filled(bytes, 0x7F);
    ASSERT_EQ(LaunchMoeDispatch(static_cast<const int32_t*>(d_ids.raw()), shape, workspace.raw(),
                                bytes, nullptr),
              cudaSuccess);
    std::vector<uint8_t> host = Read<uint8_t>(workspace, bytes);
    const MoeDispatchOutputs got = MoeDispatchViews(host.data(), shape);
    const int32_t slots = want.slots();
    const size_t pairs = ids.size();
    EXPECT_EQ(std::vector<int32_t>(got.counts, got.counts + c.experts), want.counts);
    EXPECT_EQ(std::vector<int32_t>(got.offsets, got.offsets + c.experts + 1), want.offsets);
    EXPECT_EQ(std::vector<int32_t>(got.slot_token, got.slot_token + slots), want.slot_token);
    EXPECT_EQ(std::vector<int32_t>(got.slot_pair, got.slot_pair + slots), want.slot_pair);
    EXPECT_EQ(std::vector<int32_t>(got.pair_slot, got.pair_slot + pairs), want.pair_slot);
    ASSERT_EQ(*got.num_tiles, static_cast<int32_t>(want.tiles.size()));
    ASSERT_LE(want.tiles.size(), static_cast<size_t>(MoeMaxTiles(shape)));
    for (size_t j = 0; j < want.tiles.size(); ++j) {
      const MoeTile& g = got.tiles[j];
      const MoeTile& w = want.tiles[j];
      ASSERT_TRUE(g.expert == w.expert && g.begin == w.begin && g.end == w.end && g.unused == 0)
          << "tile " << j << ": got (" << g.expert << ", " << g.begin << ", " << g.end
          << "), want (" << w.expert << ", " << w.begin << ", " << w.end << ")";
    }
  }
}

// Each grouped GEMM alone, every tile size and weight type, against float64 on the same BF16
// activations and exact weights. A few dropped ids leave slots past the dispatch's count, whose
// output rows must stay untouched (NaN).
TEST(MoeGroupedGemmTest, MatchesFloat64OnTheSameBf16Inputs) {
  DSERVE_SKIP_WITHOUT_GPU();
  constexpr int E = 16, K = 4;
  constexpr int64_t kHidden = 384, kInter = 256, T = 50;  // 3 and 2 pipeline stages
  std::mt19937 rng(21);
  for (const DType dtype : {DType::kF8E4M3, DType::kBF16}) {
    const Experts ex = MakeExperts(dtype, E, kHidden, kInter, rng);
    for (const int32_t block_m : {16, 64, 128}) {
      SCOPED_TRACE(absl::StrCat(TypeName(dtype), ", tiles of ", block_m));
      std::vector<int32_t> ids = RouteByHand(Routing::kSkewed, T, K, E, rng);
      ids[5] = -1;
      ids[77] = E;
      const MoeDispatchShape shape{T, K, E, block_m};
      const HostRouting r = HostDispatch(ids, K, E, block_m);
      const int32_t slots = r.slots();
      const int64_t pairs = T * K;
      const Tensor d_ids = ToDevice(ids);
      const size_t bytes = MoeDispatchWorkspaceBytes(shape);
      Tensor workspace = Filled(bytes);
      ASSERT_EQ(LaunchMoeDispatch(static_cast<const int32_t*>(d_ids.raw()), shape, workspace.raw(),
                                  bytes, nullptr),
                cudaSuccess);
      const MoeDispatchOutputs routing = MoeDispatchViews(workspace.raw(), shape);

      // BF16 activations: x per token for gate/up, one row per slot for down.
      auto bf16_rows = [&rng](int64_t rows, int64_t cols, std::vector<uint16_t>* bits,
                              std::vector<double>* values) {
        const std::vector<float> v = RandomVector(rows * cols, rng);
        bits->resize(v.size());
        values->resize(v.size());
        for (size_t i = 0; i < v.size(); ++i) {
          (*bits)[i] = FloatToBf16(v[i]);
          (*values)[i] = Bf16ToFloat((*bits)[i]);
        }
      };
      std::vector<uint16_t> x_bits, act_bits;
      std::vector<double> x, act;
      bf16_rows(T, kHidden, &x_bits, &x);
      bf16_rows(pairs, kInter, &act_bits, &act);
      const Tensor d_x = ToDevice(x_bits), d_act = ToDevice(act_bits);
      Tensor gate_up_out = Filled(pairs * kInter * 2), down_out = Filled(pairs * kHidden * 4);

      MoeGemmParams g;
      g.kind = MoeGemmKind::kGateUp;
      g.weight_type = ex.type();
      g.experts = ex.device_table();
      g.num_experts = E;
      g.n = kInter;
      g.k = kHidden;
      g.a = static_cast<const uint16_t*>(d_x.raw());
      g.a_rows = T;
      g.slot_token = routing.slot_token;
      g.out = gate_up_out.raw();
      g.tiles = routing.tiles;
      g.num_tiles = routing.num_tiles;
      g.max_tiles = MoeMaxTiles(shape);
      g.block_m = block_m;
      ASSERT_EQ(LaunchMoeGroupedGemm(g, nullptr), cudaSuccess);
      MoeGemmParams d = g;
      d.kind = MoeGemmKind::kDown;
      d.n = kHidden;
      d.k = kInter;
      d.a = static_cast<const uint16_t*>(d_act.raw());
      d.a_rows = pairs;
      d.slot_token = nullptr;
      d.out = down_out.raw();
      ASSERT_EQ(LaunchMoeGroupedGemm(d, nullptr), cudaSuccess);

      std::vector<float> want_act(slots * kInter), want_y(slots * kHidden);
      for (int e = 0; e < E; ++e) {
        const std::vector<double>& wg = ex.gate(e).real;
        const std::vector<double>& wu = ex.up(e).real;
        const std::vector<double>& wd = ex.down(e).real;
        for (int32_t s = r.offsets[e]; s < r.offsets[e + 1]; ++s) {
          const double* xs = x.data() + r.slot_token[s] * kHidden;
          for (int64_t n = 0; n < kInter; ++n) {
            double gs = 0, us = 0;
            for (int64_t k = 0; k < kHidden; ++k) {
              gs += xs[k] * wg[n * kHidden + k];
              us += xs[k] * wu[n * kHidden + k];
            }
            want_act[s * kInter + n] = static_cast<float>(gs / (1.0 + std::exp(-gs)) * us);
          }
          const double* as = act.data() + s * kInter;
          for (int64_t n = 0; n < kHidden; ++n) {
            double ys = 0;
            for (int64_t k = 0; k < kInter; ++k) ys += as[k] * wd[n * kInter + k];
            want_y[s * kHidden + n] = static_cast<float>(ys);
          }
        }
      }
      const std::vector<uint16_t> got_bits = Read<uint16_t>(gate_up_out, pairs * kInter);
      std::vector<float> got_act(got_bits.size());
      for (size_t i = 0; i < got_bits.size(); ++i) got_act[i] = Bf16ToFloat(got_bits[i]);
      const std::vector<float> got_y = Read<float>(down_out, pairs * kHidden);
      ExpectAgree(got_act.data(), want_act.data(), slots * kInter, 1e9, kGateUpRel, kGateUpCosine,
                  "gate/up with SwiGLU");
      ExpectAgree(got_y.data(), want_y.data(), slots * kHidden, 1e9, kDownRel, kDownCosine, "down");
      // Rows past the dispatch's slots were never written.
      EXPECT_TRUE(std::all_of(got_act.begin() + slots * kInter, got_act.end(),
                              [](float v) { return std::isnan(v); }));
      EXPECT_TRUE(std::all_of(got_y.begin() + slots * kHidden, got_y.end(),
                              [](float v) { return std::isnan(v); }));
    }
  }
}

struct ChainCase {
  const char* name;
  int64_t hidden, inter;
  int experts, top_k;
  std::vector<int64_t> tokens;
  std::vector<Routing> routings;
};

TEST(MoeExpertsTest, MatchesTheCpuOpWithinBf16Rounding) {
  DSERVE_SKIP_WITHOUT_GPU();
  const std::vector<Routing> all = {Routing::kUniform, Routing::kSkewed, Routing::kSparse};
  const std::vector<ChainCase> cases = {
      {"tiny", 256, 128, 16, 4, {1, 7, 64, 300}, all},
      {"V3-like, reduced", 512, 256, 32, 6, {7, 64}, {Routing::kUniform, Routing::kSkewed}},
      {"V3-like, 64 experts", 1024, 512, 64, 8, {1, 300}, {Routing::kUniform}},
  };
  cpu::CpuOps cpu(0);
  std::mt19937 rng(31);
  for (const ChainCase& c : cases) {
    for (const DType dtype : {DType::kF8E4M3, DType::kBF16}) {
      const Experts ex = MakeExperts(dtype, c.experts, c.hidden, c.inter, rng);
      for (const Routing routing : c.routings) {
        for (const int64_t T : c.tokens) {
          const std::string what = absl::StrCat(c.name, ", ", TypeName(dtype), ", ",
                                                RoutingName(routing), ", ", T, " tokens");
          SCOPED_TRACE(what);
          Problem p = MakeProblem(routing, T, c.hidden, c.inter, c.top_k, c.experts, rng);
          const std::vector<float> got = RunOnDevice(ex, p);
          const std::vector<float> want = RunOnCpu(cpu, ex, p);
          ExpectAgree(got.data(), want.data(), T * c.hidden, 1e9, kRel, kCosine, what);
          // Control: the reference with one token's first expert replaced must not pass.
          const int64_t t = T / 2;
          int32_t& id = p.ids[t * c.top_k];
          do {
            id = (id + 1) % c.experts;
          } while (std::count(p.ids.begin() + t * c.top_k, p.ids.begin() + (t + 1) * c.top_k, id) >
                   1);
          const std::vector<float> wrong = RunOnCpu(cpu, ex, p);
          const Agreement a = Compare(got.data(), wrong.data(), T * c.hidden);
          EXPECT_FALSE(Passes(a, kRel, kCosine))
              << "a token sent to another expert passes: rel " << a.rel << ", cosine " << a.cosine;
        }
      }
    }
  }
}

TEST(MoeExpertsTest, DropsIdsOutOfRange) {
  DSERVE_SKIP_WITHOUT_GPU();
  constexpr int E = 16, K = 4;
  cpu::CpuOps cpu(0);
  std::mt19937 rng(41);
  const Experts ex = MakeExperts(DType::kF8E4M3, E, 256, 128, rng);
  Problem p = MakeProblem(Routing::kUniform, 64, 256, 128, K, E, rng);
  for (int i = 0; i < 9; ++i) p.ids[i * 23 % p.ids.size()] = i % 2 == 0 ? -1 : E + i;
  p.ids[8] = p.ids[9] = p.ids[10] = p.ids[11] = -5;  // token 2 has no expert at all: zeros
  const std::vector<float> got = RunOnDevice(ex, p);
  const std::vector<float> want = RunOnCpu(cpu, ex, p);
  ExpectAgree(got.data(), want.data(), got.size(), 1e9, kRel, kCosine, "dropped ids");
  EXPECT_TRUE(
      std::all_of(got.begin() + 2 * 256, got.begin() + 3 * 256, [](float v) { return v == 0.0f; }));
}

// The arithmetic per output is the same whatever the tile size and whoever shares the batch:
// the k order, the per-stage scaling and the combine's j order do not depend on either.
TEST(MoeExpertsTest, ResultsDoNotDependOnTileSizeOrBatch) {
  DSERVE_SKIP_WITHOUT_GPU();
  constexpr int E = 16, K = 4;
  constexpr int64_t kHidden = 256, kInter = 128, T = 64;
  std::mt19937 rng(51);
  for (const DType dtype : {DType::kF8E4M3, DType::kBF16}) {
    SCOPED_TRACE(TypeName(dtype));
    const Experts ex = MakeExperts(dtype, E, kHidden, kInter, rng);
    const Problem p = MakeProblem(Routing::kSkewed, T, kHidden, kInter, K, E, rng);
    const std::vector<float> base = RunOnDevice(ex, p, 16);
    ASSERT_TRUE(std::all_of(base.begin(), base.end(), [](float v) { return std::isfinite(v); }));
    for (const int32_t block_m : {64, 128}) {
      EXPECT_EQ(RunOnDevice(ex, p, block_m), base) << "tiles of " << block_m;
    }
    for (const int64_t t : {int64_t{0}, int64_t{37}}) {
      Problem one;
      one.tokens = 1;
      one.hidden = kHidden;
      one.inter = kInter;
      one.top_k = K;
      one.x.assign(p.x.begin() + t * kHidden, p.x.begin() + (t + 1) * kHidden);
      one.ids.assign(p.ids.begin() + t * K, p.ids.begin() + (t + 1) * K);
      one.weights.assign(p.weights.begin() + t * K, p.weights.begin() + (t + 1) * K);
      EXPECT_EQ(RunOnDevice(ex, one),
                std::vector<float>(base.begin() + t * kHidden, base.begin() + (t + 1) * kHidden))
          << "token " << t << " alone";
    }
  }
}

}  // namespace
}  // namespace dserve::kernels::cuda
