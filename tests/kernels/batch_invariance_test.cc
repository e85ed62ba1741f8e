// The CPU kernels give every token the same bits whatever else shares its call: Linear row t
// of a T-row batch equals Linear of row t alone, and MLA attention of a query does not depend
// on how its sequence was cut into chunks or which sequences share the step. The engine's
// "same tokens alone or batched" guarantee rests on this. Also: the BF16 latent cache stores
// round-to-nearest-even of the F32 values and attention over it stays close to the F32 cache.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/latent_cache.h"
#include "tests/support/test_weight.h"

namespace dserve::kernels::cpu {
namespace {

using testing::MakeTestWeight;
using testing::SupportedIsas;
using testing::TestWeight;

TestWeight RandomWeight(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> bytes(rows * cols * DTypeSize(dtype));
  std::vector<float> scales;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = normal(rng);
    if (dtype == DType::kF8E4M3) {
      bytes[i] = FloatToFp8E4M3(v * 64.0f);
    } else if (dtype == DType::kBF16) {
      const uint16_t h = FloatToBf16(v);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    }
  }
  if (dtype == DType::kF8E4M3) {
    scales.resize(testing::NumBlockScales(rows, cols));
    for (float& s : scales) s = 0.01f + 0.02f * std::abs(normal(rng));
  }
  return MakeTestWeight(dtype, rows, cols, std::move(bytes), std::move(scales));
}

// out [T, w.rows] = x [T, w.cols] * W^T through the public Ops::Linear.
void Linear(CpuOps& ops, const float* x, int64_t T, const kernels::Weight& w, float* out) {
  Tensor in = Tensor::Zeros(DType::kF32, {T, w.cols});
  std::memcpy(in.data<float>(), x, T * w.cols * sizeof(float));
  Tensor y = Tensor::Zeros(DType::kF32, {T, w.rows});
  ops.Linear(in, w, y);
  std::memcpy(out, y.data<float>(), T * w.rows * sizeof(float));
}

bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

class LinearInvarianceTest : public ::testing::TestWithParam<DType> {};

// Row counts cross the matrix-vector / matrix-matrix switch and the token and row groups.
TEST_P(LinearInvarianceTest, RowResultsDoNotDependOnBatchSize) {
  std::mt19937 rng(7);
  // 300 columns are not a multiple of any vector width (the generic path); 256 and 384 are.
  for (int64_t K : {256, 384, 300}) {
    const int64_t N = 208;  // spans two FP8 row blocks, a ragged last panel, 13 packed groups
    TestWeight w = RandomWeight(GetParam(), N, K, rng);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    constexpr int64_t kMaxT = 23;
    std::vector<float> x(kMaxT * K);
    for (float& v : x) v = normal(rng);
    // Also in the packed layout PrepareWeight gives large BF16/F32 matrices (the LM head);
    // FP8 weights keep theirs.
    for (bool pack : {false, true}) {
    for (Isa isa : SupportedIsas()) {
      SCOPED_TRACE(std::string("isa ") + std::string(IsaName(isa)) + " K " + std::to_string(K) +
                   (pack ? " packed" : ""));
      CpuOps ops(2, isa);
      w.w.packed = Tensor();
      if (pack) ops.PrepareWeight(w.w);
      EXPECT_EQ(w.w.packed.empty(), !pack || GetParam() == DType::kF8E4M3);
      std::vector<float> alone(kMaxT * N);
      for (int64_t t = 0; t < kMaxT; ++t) Linear(ops, x.data() + t * K, 1, w.w, &alone[t * N]);
      for (int64_t T : {2, 3, 4, 5, 6, 7, 8, 13, 16, 23}) {
        std::vector<float> batched(T * N);
        Linear(ops, x.data(), T, w.w, batched.data());
        for (int64_t t = 0; t < T; ++t) {
          ASSERT_TRUE(SameBits(&batched[t * N], &alone[t * N], N))
              << "row " << t << " of a " << T << "-row batch differs from the row alone";
        }
      }
      // And right: against float64 over the weight's real values (K float products).
      for (int64_t t = 0; t < kMaxT; t += 7) {
        for (int64_t r = 0; r < N; ++r) {
          double want = 0, scale = 0;
          for (int64_t k = 0; k < K; ++k) {
            want += w.real[r * K + k] * x[t * K + k];
            scale += std::fabs(w.real[r * K + k] * x[t * K + k]);
          }
          ASSERT_NEAR(alone[t * N + r], want, 1e-5 * scale) << "row " << r << " token " << t;
        }
      }
    }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LinearInvarianceTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF8E4M3),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// Small MLA: 4 heads, kv_lora 64 + rope 16, pages of 16 tokens, one sequence of 300 tokens
// (crosses the naive form's 256-token blocks) in a shuffled block table.
constexpr int kHeads = 4;
constexpr int64_t kNope = 16, kRope = 16, kV = 16, kLora = 64, kPage = 16, kCtx = 300;
constexpr int64_t kQk = kNope + kRope;

struct MlaFixture {
  explicit MlaFixture(DType cache_dtype) : rng(11) {
    kv_b = RandomWeight(DType::kF32, kHeads * (kNope + kV), kLora, rng);
    const int64_t pages = (kCtx + kPage - 1) / kPage + 4;
    cache = LatentCache(LatentCacheShape{1, kLora, kRope, kPage, pages, cache_dtype});
    for (int64_t p = 0; p < (kCtx + kPage - 1) / kPage; ++p) table.push_back(int32_t((p * 7) % pages));
    cos.resize(kCtx * kRope / 2);
    sin.resize(kCtx * kRope / 2);
    for (int64_t pos = 0; pos < kCtx; ++pos) {
      for (int64_t i = 0; i < kRope / 2; ++i) {
        const double angle = pos / std::pow(10000.0, 2.0 * i / kRope);
        cos[pos * kRope / 2 + i] = static_cast<float>(std::cos(angle));
        sin[pos * kRope / 2 + i] = static_cast<float>(std::sin(angle));
      }
    }
    rope = RopeTable{cos.data(), sin.data(), kCtx, kRope};
    std::normal_distribution<float> normal(0.0f, 1.0f);
    kv_a = Tensor::Zeros(DType::kF32, {kCtx, kLora + kRope});
    for (int64_t i = 0; i < kv_a.numel(); ++i) kv_a.data<float>()[i] = normal(rng);
    q = Tensor::Zeros(DType::kF32, {kCtx, kHeads * kQk});
    for (int64_t i = 0; i < q.numel(); ++i) q.data<float>()[i] = normal(rng);
    norm = Tensor::Zeros(DType::kF32, {kLora});
    for (int64_t i = 0; i < kLora; ++i) norm.data<float>()[i] = 1.0f + 0.1f * normal(rng);
    positions.resize(kCtx);
    for (int64_t i = 0; i < kCtx; ++i) positions[i] = static_cast<int32_t>(i);
  }

  void WriteAll(CpuOps& ops) {
    AttentionBatch all{positions, {{0, kCtx, 0, table}}};
    ops.MlaWriteCache(kv_a, norm, 1e-6f, rope, all, cache, 0);
  }

  // Attention outputs [kCtx, heads * v] with the queries cut into chunks of these sizes; each
  // chunk runs in its own call as one slice after a decoy sequence.
  std::vector<float> Attend(CpuOps& ops, MlaMode mode, const std::vector<int64_t>& chunks) {
    std::vector<float> out(kCtx * kHeads * kV, NAN);
    int64_t begin = 0;
    for (int64_t n : chunks) {
      // A decoy sequence first (its own 5 tokens at the start of the same cache), so the
      // chunk's rows start at 5 of the step's rows.
      constexpr int64_t kDecoy = 5;
      std::vector<int32_t> pos(kDecoy + n);
      for (int64_t i = 0; i < kDecoy; ++i) pos[i] = static_cast<int32_t>(i);
      for (int64_t i = 0; i < n; ++i) pos[kDecoy + i] = static_cast<int32_t>(begin + i);
      AttentionBatch batch{pos, {{0, kDecoy, 0, table}, {kDecoy, n, begin, table}}};
      Tensor qs = Tensor::Zeros(DType::kF32, {kDecoy + n, kHeads * kQk});
      std::memcpy(qs.data<float>(), q.data<float>(), kDecoy * kHeads * kQk * sizeof(float));
      std::memcpy(qs.data<float>() + kDecoy * kHeads * kQk, q.data<float>() + begin * kHeads * kQk,
                  n * kHeads * kQk * sizeof(float));
      Tensor o = Tensor::Zeros(DType::kF32, {kDecoy + n, kHeads * kV});
      MlaParams p;
      p.batch = &batch;
      p.cache = &cache;
      p.layer = 0;
      p.kv_b = &kv_b.w;
      p.num_heads = kHeads;
      p.nope_dim = kNope;
      p.rope_dim = kRope;
      p.v_dim = kV;
      p.rope = &rope;
      p.softmax_scale = 0.17f;
      p.mode = mode;
      ops.MlaAttention(p, qs, o);
      std::memcpy(out.data() + begin * kHeads * kV, o.data<float>() + kDecoy * kHeads * kV,
                  n * kHeads * kV * sizeof(float));
      begin += n;
    }
    return out;
  }

  std::mt19937 rng;
  TestWeight kv_b;
  LatentCache cache;
  std::vector<int32_t> table, positions;
  std::vector<float> cos, sin;
  RopeTable rope;
  Tensor kv_a, q, norm;
};

class MlaInvarianceTest : public ::testing::TestWithParam<DType> {};

TEST_P(MlaInvarianceTest, QueriesDoNotDependOnChunking) {
  MlaFixture f(GetParam());
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(std::string("isa ") + std::string(IsaName(isa)));
    CpuOps ops(2, isa);
    f.WriteAll(ops);
    for (MlaMode mode : {MlaMode::kNaive, MlaMode::kAbsorbed}) {
      SCOPED_TRACE(mode == MlaMode::kNaive ? "naive" : "absorbed");
      const std::vector<float> whole = f.Attend(ops, mode, {kCtx});
      for (float v : whole) ASSERT_TRUE(std::isfinite(v));
      const std::vector<std::vector<int64_t>> cuts = {
          {1, 1, 1, 97, 200}, {64, 64, 64, 64, 44}, {255, 1, 44}, {257, 43}, {3, 150, 147}};
      for (const auto& cut : cuts) {
        EXPECT_TRUE(SameBits(f.Attend(ops, mode, cut).data(), whole.data(), whole.size()))
            << "chunking starting " << cut[0] << ", " << cut[1];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CacheDtype, MlaInvarianceTest,
                         ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(LatentCacheTest, Bf16StoresRoundedValuesAndAttentionStaysClose) {
  MlaFixture f32(DType::kF32), bf16(DType::kBF16);
  CpuOps ops(2);
  f32.WriteAll(ops);
  bf16.WriteAll(ops);
  std::vector<float> a(kLora + kRope), b(kLora + kRope);
  for (int64_t j = 0; j < kCtx; ++j) {
    f32.cache.ReadTokens(0, f32.table, j, 1, a.data());
    bf16.cache.ReadTokens(0, bf16.table, j, 1, b.data());
    for (int64_t c = 0; c < kLora + kRope; ++c) {
      ASSERT_EQ(b[c], Bf16ToFloat(FloatToBf16(a[c]))) << "token " << j << " value " << c;
    }
  }
  // BF16 keeps 8 significant bits (relative rounding <= 2^-9); scores and outputs are sums of
  // such products, so outputs stay within a few 2^-9 of the output scale.
  for (MlaMode mode : {MlaMode::kNaive, MlaMode::kAbsorbed}) {
    const std::vector<float> x = f32.Attend(ops, mode, {kCtx});
    const std::vector<float> y = bf16.Attend(ops, mode, {kCtx});
    double diff = 0, mag = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      diff = std::max(diff, std::fabs(double(x[i]) - y[i]));
      mag = std::max(mag, std::fabs(double(x[i])));
    }
    EXPECT_LE(diff / mag, 2e-2) << "BF16 cache vs F32 cache";
    EXPECT_GT(diff, 0.0) << "the BF16 cache should round something";
  }
}

TEST(LatentCacheTest, CopyPageCopiesEveryLayer) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    LatentCache cache(LatentCacheShape{3, 8, 4, 2, 5, dtype});
    std::vector<float> v(12), got(12);
    const std::vector<int32_t> src_table = {1}, dst_table = {3};
    for (int layer = 0; layer < 3; ++layer) {
      for (int64_t slot = 0; slot < 2; ++slot) {
        for (int c = 0; c < 12; ++c) v[c] = float(layer * 100 + slot * 10 + c);
        cache.WriteToken(layer, src_table, slot, v.data());
      }
    }
    cache.CopyPage(1, 3);
    for (int layer = 0; layer < 3; ++layer) {
      for (int64_t slot = 0; slot < 2; ++slot) {
        cache.ReadTokens(layer, dst_table, slot, 1, got.data());
        for (int c = 0; c < 12; ++c) ASSERT_EQ(got[c], float(layer * 100 + slot * 10 + c));
      }
    }
  }
}

}  // namespace
}  // namespace dserve::kernels::cpu
