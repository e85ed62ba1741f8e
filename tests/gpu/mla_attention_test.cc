// The GPU's absorbed MLA attention against the CPU op in both its forms (absorbed and naive) on
// the same inputs: a ragged batch of decode rows, a two-token step, a prefill and a chunk after
// cached tokens, over scattered pages, at DeepSeek-V3's head shape with FP8 (random block
// scales) and BF16 kv_b and BF16 and F32 caches; a tiny model's odd sizes; a 32K-token decode;
// 128 heads. Unused slots, pages and the other layer hold NaN in both caches, and the device
// output and workspace start as NaN, so a stray read or an unwritten output shows. The argument
// checks run without a GPU; the rest skip, saying so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/mla_attention.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_compare.h"

namespace dserve::kernels::cuda {
namespace {

using dserve::testing::ExpectAgree;

struct HeadShape {
  int64_t heads = 0, nope = 0, rope = 0, v = 0, kv_lora = 0, page_size = 64;
};

// One sequence of the batch: `tokens` new tokens after `cached` ones.
struct Context {
  int64_t cached = 0, tokens = 0;
};

struct Case {
  HeadShape shape;
  std::vector<Context> sequences;
  DType weight_dtype = DType::kF8E4M3;
  DType cache_dtype = DType::kBF16;
  std::vector<MlaMode> references;  // the CPU forms the GPU output is compared with
  uint32_t seed = 1;
};

constexpr int kLayers = 2;
constexpr int kLayer = 1;  // layer 0 stays NaN: the cache pointer must be offset to layer 1
constexpr int64_t kSparePages = 3;  // pages no sequence owns (NaN)

Tensor ToDevice(const void* src, size_t bytes) {
  absl::StatusOr<Tensor> t = DeviceTensor(DType::kU8, {static_cast<int64_t>(bytes)});
  DSERVE_CHECK(t.ok()) << t.status().ToString();
  const absl::Status s = CopyToDevice(t->raw(), src, bytes);
  DSERVE_CHECK(s.ok()) << s.ToString();
  return *std::move(t);
}

// A device F32 buffer of n values, every byte 0xFF (NaN).
Tensor PoisonedFloats(int64_t n) {
  absl::StatusOr<Tensor> t = DeviceTensor(DType::kF32, {n});
  DSERVE_CHECK(t.ok()) << t.status().ToString();
  const absl::Status s = FillDevice(t->raw(), 0xFF, t->bytes());
  DSERVE_CHECK(s.ok()) << s.ToString();
  return *std::move(t);
}

// kv_b's bytes in one dtype, on the host and the device; `cpu` and `gpu` describe the same bytes
// (and for FP8 the same block scales). Built in place: both views point into its members.
struct KvB {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  Tensor device_bytes, device_scales;
  Weight cpu;
  WeightView gpu;
};

WeightType ViewType(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3: return WeightType::kFp8E4M3;
    case DType::kBF16: return WeightType::kBF16;
    case DType::kF16: return WeightType::kF16;
    default: return WeightType::kF32;
  }
}

// Elements of about `stddev`. FP8: E4M3 codes over much of the format's range times per-block
// scales that differ by up to 4x, so a block read with a neighbour's scale shows.
void MakeKvB(DType dtype, int64_t rows, int64_t cols, float stddev, std::mt19937& rng, KvB* w) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = rows * cols;
  w->bytes.resize(n * DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) {
    const float x = normal(rng);
    if (dtype == DType::kF8E4M3) {
      w->bytes[i] = FloatToFp8E4M3(x * 32.0f);
    } else if (dtype == DType::kBF16 || dtype == DType::kF16) {
      const uint16_t h = dtype == DType::kBF16 ? FloatToBf16(x * stddev) : FloatToF16(x * stddev);
      std::memcpy(w->bytes.data() + 2 * i, &h, 2);
    } else {
      const float f = x * stddev;
      std::memcpy(w->bytes.data() + 4 * i, &f, 4);
    }
  }
  w->cpu.dtype = dtype;
  w->cpu.rows = rows;
  w->cpu.cols = cols;
  w->cpu.data = w->bytes.data();
  w->device_bytes = ToDevice(w->bytes.data(), w->bytes.size());
  w->gpu.type = ViewType(dtype);
  w->gpu.rows = rows;
  w->gpu.cols = cols;
  w->gpu.data = w->device_bytes.raw();
  if (dtype == DType::kF8E4M3) {
    std::uniform_real_distribution<float> spread(0.5f, 2.0f);
    w->scales.resize(w->cpu.scale_rows() * w->cpu.scale_cols());
    for (float& s : w->scales) s = stddev / 32.0f * spread(rng);
    w->cpu.scale_inv = w->scales.data();
    w->device_scales = ToDevice(w->scales.data(), w->scales.size() * sizeof(float));
    w->gpu.scale_inv = w->device_scales.data<float>();
  }
}

const char* ModeName(MlaMode mode) {
  return mode == MlaMode::kNaive ? "naive CPU reference" : "absorbed CPU reference";
}

void ExpectMatchesCpu(const Case& c) {
  const HeadShape& s = c.shape;
  const int64_t qk = s.nope + s.rope, dim = s.kv_lora + s.rope, half = s.rope / 2;
  std::mt19937 rng(c.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  // Block tables over pages handed out in a shuffled order (non-monotone tables), with a few
  // pages left to nobody.
  int64_t pages = kSparePages, num_positions = 1;
  for (const Context& ctx : c.sequences) {
    pages += (ctx.cached + ctx.tokens + s.page_size - 1) / s.page_size;
    num_positions = std::max(num_positions, ctx.cached + ctx.tokens);
  }
  std::vector<int32_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::vector<int32_t>> tables;
  int64_t next = 0;
  for (const Context& ctx : c.sequences) {
    const int64_t n = (ctx.cached + ctx.tokens + s.page_size - 1) / s.page_size;
    tables.emplace_back(order.begin() + next, order.begin() + next + n);
    next += n;
  }

  // The batch as the CPU op takes it, and the per-row arrays the kernel takes.
  AttentionBatch batch;
  std::vector<int32_t> positions, row_keys, row_table, block_tables;
  int64_t rows = 0;
  for (size_t i = 0; i < c.sequences.size(); ++i) {
    const Context& ctx = c.sequences[i];
    batch.sequences.push_back({rows, ctx.tokens, ctx.cached, tables[i], MlaMode::kAuto});
    for (int64_t t = 0; t < ctx.tokens; ++t) {
      positions.push_back(static_cast<int32_t>(ctx.cached + t));
      row_keys.push_back(static_cast<int32_t>(ctx.cached + t + 1));
      row_table.push_back(static_cast<int32_t>(block_tables.size()));
    }
    block_tables.insert(block_tables.end(), tables[i].begin(), tables[i].end());
    rows += ctx.tokens;
  }
  batch.positions = positions;

  // Every byte NaN, then each sequence's tokens (the step's new ones included, as the cache
  // write leaves them) written at their slots: random latents of about RMS-normalised size.
  LatentCache cache(
      LatentCacheShape{kLayers, s.kv_lora, s.rope, s.page_size, pages, c.cache_dtype});
  std::memset(cache.storage().raw(), 0xFF, cache.storage().bytes());
  std::uniform_real_distribution<float> uniform(-1.5f, 1.5f);
  std::vector<float> token(dim);
  for (size_t i = 0; i < c.sequences.size(); ++i) {
    for (int64_t index = 0; index < c.sequences[i].cached + c.sequences[i].tokens; ++index) {
      for (float& x : token) x = uniform(rng);
      cache.WriteToken(kLayer, tables[i], index, token.data());
    }
  }

  std::vector<float> cos(num_positions * half), sin(num_positions * half);
  for (int64_t p = 0; p < num_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / s.rope);
      cos[p * half + i] = static_cast<float>(std::cos(angle) * 1.1);  // a YaRN-like mscale
      sin[p * half + i] = static_cast<float>(std::sin(angle) * 1.1);
    }
  }
  const RopeTable rope{cos.data(), sin.data(), num_positions, s.rope};

  Tensor q = Tensor::Zeros(DType::kF32, {rows, s.heads * qk});
  for (int64_t i = 0; i < q.numel(); ++i) q.data<float>()[i] = normal(rng);
  // Scores of a few units (softmax neither flat nor one-hot): W_UK^T q_nope has variance
  // nope * stddev^2 per latent value.
  KvB kv_b;
  MakeKvB(c.weight_dtype, s.heads * (s.nope + s.v), s.kv_lora,
          1.2f / std::sqrt(static_cast<float>(s.nope)), rng, &kv_b);
  const float softmax_scale = 1.0f / std::sqrt(static_cast<float>(qk));

  cpu::CpuOps ops(2);
  MlaParams mp;
  mp.batch = &batch;
  mp.cache = &cache;
  mp.layer = kLayer;
  mp.kv_b = &kv_b.cpu;
  mp.num_heads = static_cast<int>(s.heads);
  mp.nope_dim = s.nope;
  mp.rope_dim = s.rope;
  mp.v_dim = s.v;
  mp.rope = &rope;
  mp.softmax_scale = softmax_scale;
  std::vector<Tensor> want;
  for (const MlaMode mode : c.references) {
    mp.mode = mode;
    want.push_back(Tensor::Zeros(DType::kF32, {rows, s.heads * s.v}));
    ops.MlaAttention(mp, q, want.back());
  }

  const Tensor dq = ToDevice(q.raw(), q.bytes());
  const Tensor dcos = ToDevice(cos.data(), cos.size() * sizeof(float));
  const Tensor dsin = ToDevice(sin.data(), sin.size() * sizeof(float));
  const Tensor dpos = ToDevice(positions.data(), positions.size() * sizeof(int32_t));
  const Tensor dkeys = ToDevice(row_keys.data(), row_keys.size() * sizeof(int32_t));
  const Tensor drow_table = ToDevice(row_table.data(), row_table.size() * sizeof(int32_t));
  const Tensor dtables = ToDevice(block_tables.data(), block_tables.size() * sizeof(int32_t));
  const Tensor dcache = ToDevice(cache.storage().raw(), cache.storage().bytes());
  const Tensor workspace = PoisonedFloats(
      static_cast<int64_t>(MlaAttentionWorkspaceFloats(rows, s.heads, s.kv_lora, s.rope)));
  const Tensor dout = PoisonedFloats(rows * s.heads * s.v);

  MlaAttentionParams p;
  p.q = dq.data<float>();
  p.rows = rows;
  p.heads = s.heads;
  p.nope_dim = s.nope;
  p.rope_dim = s.rope;
  p.v_dim = s.v;
  p.kv_lora = s.kv_lora;
  p.kv_b = kv_b.gpu;
  p.cos = dcos.data<float>();
  p.sin = dsin.data<float>();
  p.positions = dpos.data<int32_t>();
  p.row_keys = dkeys.data<int32_t>();
  p.row_table = drow_table.data<int32_t>();
  p.block_tables = dtables.data<int32_t>();
  p.cache = static_cast<const uint8_t*>(dcache.raw()) + cache.ByteOffset(kLayer, 0, 0);
  p.format = c.cache_dtype == DType::kF32    ? LatentFormat::kF32
             : c.cache_dtype == DType::kBF16 ? LatentFormat::kBF16
                                             : LatentFormat::kFp8;
  p.page_size = s.page_size;
  p.softmax_scale = softmax_scale;
  p.workspace = workspace.data<float>();
  p.out = dout.data<float>();
  const cudaError_t launched = LaunchMlaAttention(p, nullptr);
  ASSERT_EQ(launched, cudaSuccess) << cudaGetErrorName(launched);
  const absl::Status synced = Synchronize();
  ASSERT_TRUE(synced.ok()) << synced;
  std::vector<float> got(rows * s.heads * s.v);
  ASSERT_TRUE(CopyToHost(got.data(), dout.raw(), got.size() * sizeof(float)).ok());

  // Both sides compute in F32 from the same stored values (kv_b decoded exactly, the same cache
  // elements), in different orders: F32 rounding of sums over 128-512 terms and softmax sums
  // over up to 32K keys, about 1e-6 relative to the largest output here (1e-5 at worst for
  // the longest context). The naive reference expands K and V instead, the same function in
  // another order, so it gets the same bound. rel 1e-4 leaves that a 10x margin and is far
  // below what a wrong key, page, scale block or mask gives (outputs off by 1e-2 or more);
  // cosine 0.99999 allows 4e-3 of relative RMS error. No absolute bound: rel is the scaled one.
  constexpr double kRel = 1e-4, kCosine = 0.99999;
  const double no_abs = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(ModeName(c.references[i]));
    ExpectAgree(got.data(), want[i].data<float>(), static_cast<int64_t>(got.size()), no_abs,
                kRel, kCosine, "attention output");
  }
}

std::string Describe(const Case& c) {
  return "kv_b " + std::string(DTypeName(c.weight_dtype)) + ", cache " +
         std::string(DTypeName(c.cache_dtype));
}

#define DSERVE_SKIP_WITHOUT_GPU()                                     \
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {            \
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";       \
  }

constexpr HeadShape kV3Heads16{16, 128, 64, 128, 512, 64};

TEST(CudaMlaAttentionTest, RaggedBatchMatchesBothCpuForms) {
  DSERVE_SKIP_WITHOUT_GPU();
  // Decode after 1000 tokens and after exactly one full page, two tokens after 300, a
  // 130-token prefill, a 70-token chunk after 200: causal masks inside and across pages.
  const std::vector<Context> contexts = {{1000, 1}, {64, 1}, {300, 2}, {0, 130}, {200, 70}};
  uint32_t seed = 11;
  for (const DType weight : {DType::kF8E4M3, DType::kBF16}) {
    for (const DType cache : {DType::kBF16, DType::kF32, DType::kF8E4M3}) {
      const Case c{kV3Heads16, contexts, weight, cache, {MlaMode::kAbsorbed, MlaMode::kNaive},
                   seed++};
      SCOPED_TRACE(Describe(c));
      ExpectMatchesCpu(c);
    }
  }
}

TEST(CudaMlaAttentionTest, TinyModelSizes) {
  DSERVE_SKIP_WITHOUT_GPU();
  // kv_lora 96 and rope 16 leave a warp's last 32 token values partly empty; v 48 is not a
  // multiple of the block's 8 warps; 16-token pages; kv_b [320, 96] ends in partial FP8 blocks.
  const HeadShape tiny{4, 32, 16, 48, 96, 16};
  const std::vector<Context> contexts = {{40, 1}, {0, 37}, {17, 20}, {15, 1}};
  uint32_t seed = 21;
  for (const DType weight : {DType::kF8E4M3, DType::kF16, DType::kF32}) {
    const Case c{tiny, contexts, weight, DType::kBF16, {MlaMode::kAbsorbed, MlaMode::kNaive},
                 seed++};
    SCOPED_TRACE(Describe(c));
    ExpectMatchesCpu(c);
  }
}

TEST(CudaMlaAttentionTest, LongContextDecode) {
  DSERVE_SKIP_WITHOUT_GPU();
  // 32768 cached tokens (513 pages); the naive CPU form would take too long here.
  const Case c{kV3Heads16, {{32768, 1}}, DType::kF8E4M3, DType::kBF16, {MlaMode::kAbsorbed}, 31};
  ExpectMatchesCpu(c);
}

TEST(CudaMlaAttentionTest, DeepSeekV3HeadsDecode) {
  DSERVE_SKIP_WITHOUT_GPU();
  // 128 heads as in DeepSeek-V3; the first token of a sequence (one key) among longer ones.
  const HeadShape v3{128, 128, 64, 128, 512, 64};
  const Case c{v3, {{2000, 1}, {517, 1}, {63, 1}, {0, 1}}, DType::kF8E4M3, DType::kBF16,
               {MlaMode::kAbsorbed}, 41};
  ExpectMatchesCpu(c);
}

// Argument checks return before any CUDA call, so they run without a GPU. No case below has
// valid arguments and rows > 0: the host pointers in it are never launched on.
TEST(CudaMlaAttentionTest, RejectsBadArgumentsAndAcceptsAnEmptyBatch) {
  MlaAttentionParams empty;
  empty.heads = 16;
  empty.nope_dim = 128;
  empty.rope_dim = 64;
  empty.v_dim = 128;
  empty.kv_lora = 512;
  empty.kv_b.type = WeightType::kBF16;
  empty.kv_b.rows = 16 * 256;
  empty.kv_b.cols = 512;
  EXPECT_EQ(LaunchMlaAttention(empty, nullptr), cudaSuccess);
  EXPECT_EQ(MlaAttentionWorkspaceFloats(3, 16, 512, 64), 3u * 16u * (2u * 512u + 64u));

  auto expect_invalid = [](const MlaAttentionParams& p, const char* what) {
    EXPECT_EQ(LaunchMlaAttention(p, nullptr), cudaErrorInvalidValue) << what;
  };
  MlaAttentionParams p = empty;
  p.rope_dim = 63;
  expect_invalid(p, "odd rope_dim");
  p = empty;
  p.kv_lora = 0;
  expect_invalid(p, "kv_lora 0");
  p = empty;
  p.kv_lora = 1024;
  p.kv_b.cols = 1024;
  expect_invalid(p, "kv_lora above 512");
  p = empty;
  p.heads = 0;
  expect_invalid(p, "no heads");
  p = empty;
  p.kv_b.rows = 16 * 256 - 1;
  expect_invalid(p, "kv_b rows");
  p = empty;
  p.page_size = 0;
  expect_invalid(p, "page_size 0");
  p = empty;
  p.rows = -1;
  expect_invalid(p, "negative rows");

  // rows > 0: every pointer set (to host memory) but one.
  float dummy[4] = {};
  int32_t idummy[4] = {};
  MlaAttentionParams full = empty;
  full.rows = 1;
  full.q = full.cos = full.sin = dummy;
  full.positions = full.row_keys = full.row_table = full.block_tables = idummy;
  full.kv_b.data = dummy;
  full.cache = dummy;
  full.workspace = full.out = dummy;
  p = full;
  p.q = nullptr;
  expect_invalid(p, "no q");
  p = full;
  p.block_tables = nullptr;
  expect_invalid(p, "no block tables");
  p = full;
  p.out = nullptr;
  expect_invalid(p, "no out");
  p = full;
  p.kv_b.type = WeightType::kFp8E4M3;
  expect_invalid(p, "FP8 kv_b without scales");
}

}  // namespace
}  // namespace dserve::kernels::cuda
