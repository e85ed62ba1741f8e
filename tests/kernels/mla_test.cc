// CpuOps::MlaWriteCache and MlaAttention over a paged latent cache with shuffled,
// non-contiguous block tables: what the cache stores, naive against absorbed MLA, and both
// against a float64 attention written out here. Unused cache memory is poisoned with NaN, so
// any read outside a sequence's tokens shows up in the output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/latent_cache.h"
#include "kernels/ops.h"
#include "tests/support/test_weight.h"

namespace dserve::kernels::cpu {
namespace {

using testing::SupportedIsas;
using testing::TestWeight;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Small MLA dimensions; kv_lora 144 spans two FP8 column blocks (128 + 16) and 5 heads give
// kv_b 160 rows, two row blocks.
constexpr int kHeads = 5;
constexpr int64_t kNope = 16, kRope = 8, kV = 16, kLora = 144;
constexpr int64_t kHalf = kRope / 2, kQk = kNope + kRope, kKvw = kNope + kV;
constexpr int64_t kPageSize = 4, kNumPages = 160;
constexpr int kNumLayers = 2, kLayer = 1;  // layer 0 stays poisoned: reading it gives NaN
constexpr int64_t kPositions = 400;
constexpr float kEps = 1e-6f;
constexpr float kSoftmaxScale = 0.23f;

// kv_b [heads * (nope + v), kv_lora] in F32 or FP8 (128x128 scales), with its real values.
TestWeight RandomKvB(DType dtype, std::mt19937& rng) {
  const int64_t rows = kHeads * kKvw, cols = kLora;
  if (dtype == DType::kF32) {
    std::normal_distribution<float> normal(0.0f, 0.1f);
    std::vector<float> f32(rows * cols);
    for (float& v : f32) v = normal(rng);
    return testing::MakeF32TestWeight(rows, cols, f32);
  }
  // Codes with exponent fields 4..10 (|value| in [1/8, 15]), random sign and mantissa.
  std::uniform_int_distribution<int> sign(0, 1), exp(4, 10), mant(0, 7);
  std::vector<uint8_t> fp8(rows * cols);
  for (uint8_t& b : fp8) b = static_cast<uint8_t>((sign(rng) << 7) | (exp(rng) << 3) | mant(rng));
  std::uniform_real_distribution<float> scale(0.01f, 0.05f);
  std::vector<float> scales(testing::NumBlockScales(rows, cols));
  for (float& s : scales) s = scale(rng);
  return testing::MakeTestWeight(dtype, rows, cols, std::move(fp8), std::move(scales));
}

// One sequence of a scenario: `cached` tokens already in the cache, `n` new ones this step.
// Token j of the sequence sits at RoPE position pos_offset + j.
struct SeqSpec {
  int64_t cached;
  int64_t n;
  int64_t pos_offset;
};

// Everything random about a scenario, and the float64 expectations derived from it.
struct Scenario {
  std::vector<SeqSpec> specs;
  std::vector<std::vector<int32_t>> tables;  // shuffled, one spare (never read) page each
  std::vector<float> cos, sin;               // [kPositions, kHalf], any values
  std::vector<float> kv_norm;                // [kLora]
  std::vector<std::vector<float>> kv_a;      // per sequence [cached + n, kLora + kRope]
  std::vector<float> q;                      // [new rows, heads * (nope + rope)]
  std::vector<int64_t> row_begin;            // per sequence, into q / out
  int64_t rows = 0;
  // Expected: per sequence [cached + n, kLora + kRope] cache contents; output [rows, heads * v].
  std::vector<std::vector<double>> latent;
  std::vector<double> out;
};

// What MlaWriteCache must store for one token: the RMS-normalised latent times kv_norm, then
// k_pe with pairs (x[2i], x[2i+1]) rotated by cos/sin[pos][i].
std::vector<double> CachedToken(const Scenario& s, const float* kv_a, int64_t pos) {
  std::vector<double> t(kLora + kRope);
  double ss = 0;
  for (int64_t c = 0; c < kLora; ++c) ss += static_cast<double>(kv_a[c]) * kv_a[c];
  const double inv = 1.0 / std::sqrt(ss / kLora + kEps);
  for (int64_t c = 0; c < kLora; ++c) t[c] = kv_a[c] * inv * s.kv_norm[c];
  for (int64_t i = 0; i < kHalf; ++i) {
    const double a = kv_a[kLora + 2 * i], b = kv_a[kLora + 2 * i + 1];
    const double cs = s.cos[pos * kHalf + i], sn = s.sin[pos * kHalf + i];
    t[kLora + 2 * i] = a * cs - b * sn;
    t[kLora + 2 * i + 1] = b * cs + a * sn;
  }
  return t;
}

void ComputeReference(Scenario& s, const TestWeight& kv_b) {
  s.out.assign(s.rows * kHeads * kV, 0.0);
  for (size_t si = 0; si < s.specs.size(); ++si) {
    const SeqSpec& sp = s.specs[si];
    const int64_t ctx = sp.cached + sp.n;
    std::vector<double>& lat = s.latent[si];
    lat.resize(ctx * (kLora + kRope));
    for (int64_t j = 0; j < ctx; ++j) {
      const auto t = CachedToken(s, s.kv_a[si].data() + j * (kLora + kRope), sp.pos_offset + j);
      std::copy(t.begin(), t.end(), lat.begin() + j * (kLora + kRope));
    }
    // Per-head K_nope and V of every context token: kv_b times the latent.
    std::vector<double> kv(ctx * kHeads * kKvw, 0.0);
    for (int64_t j = 0; j < ctx; ++j) {
      for (int64_t r = 0; r < kHeads * kKvw; ++r) {
        double acc = 0;
        for (int64_t c = 0; c < kLora; ++c)
          acc += kv_b.real[r * kLora + c] * lat[j * (kLora + kRope) + c];
        kv[j * kHeads * kKvw + r] = acc;
      }
    }
    for (int64_t i = 0; i < sp.n; ++i) {
      const int64_t row = s.row_begin[si] + i;
      const int64_t pos = sp.pos_offset + sp.cached + i;
      for (int h = 0; h < kHeads; ++h) {
        const float* qh = s.q.data() + (row * kHeads + h) * kQk;
        double q_pe[kRope];
        for (int64_t p = 0; p < kHalf; ++p) {
          const double a = qh[kNope + 2 * p], b = qh[kNope + 2 * p + 1];
          const double cs = s.cos[pos * kHalf + p], sn = s.sin[pos * kHalf + p];
          q_pe[2 * p] = a * cs - b * sn;
          q_pe[2 * p + 1] = b * cs + a * sn;
        }
        const int64_t last = sp.cached + i;  // causal
        std::vector<double> score(last + 1);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= last; ++j) {
          const double* k_nope = kv.data() + (j * kHeads + h) * kKvw;
          const double* k_pe = lat.data() + j * (kLora + kRope) + kLora;
          double dot = 0;
          for (int64_t d = 0; d < kNope; ++d) dot += qh[d] * k_nope[d];
          for (int64_t d = 0; d < kRope; ++d) dot += q_pe[d] * k_pe[d];
          score[j] = dot * static_cast<double>(kSoftmaxScale);
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (double& v : score) sum += v = std::exp(v - mx);
        double* o = s.out.data() + (row * kHeads + h) * kV;
        for (int64_t j = 0; j <= last; ++j) {
          const double* v = kv.data() + (j * kHeads + h) * kKvw + kNope;
          for (int64_t d = 0; d < kV; ++d) o[d] += score[j] / sum * v[d];
        }
      }
    }
  }
}

Scenario MakeScenario(const std::vector<SeqSpec>& specs, const TestWeight& kv_b,
                      std::mt19937& rng) {
  Scenario s;
  s.specs = specs;
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f), norm_w(0.5f, 1.5f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  s.cos.resize(kPositions * kHalf);
  s.sin.resize(kPositions * kHalf);
  for (float& v : s.cos) v = uni(rng);
  for (float& v : s.sin) v = uni(rng);
  s.kv_norm.resize(kLora);
  for (float& v : s.kv_norm) v = norm_w(rng);
  std::vector<int32_t> pages(kNumPages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);
  size_t next_page = 0;
  for (const SeqSpec& sp : specs) {
    const int64_t ctx = sp.cached + sp.n;
    const int64_t need = (ctx + kPageSize - 1) / kPageSize + 1;
    EXPECT_LE(next_page + need, pages.size());
    s.tables.emplace_back(pages.begin() + next_page, pages.begin() + next_page + need);
    next_page += need;
    std::vector<float> kv_a(ctx * (kLora + kRope));
    for (float& v : kv_a) v = 2.0f * normal(rng) + 0.3f;
    s.kv_a.push_back(std::move(kv_a));
    s.row_begin.push_back(s.rows);
    s.rows += sp.n;
  }
  s.q.resize(s.rows * kHeads * kQk);
  for (float& v : s.q) v = normal(rng);
  s.latent.resize(specs.size());
  ComputeReference(s, kv_b);
  return s;
}

Tensor Rows(const std::vector<const float*>& rows, int64_t width) {
  Tensor t = Tensor::Zeros(DType::kF32, {static_cast<int64_t>(rows.size()), width});
  for (size_t r = 0; r < rows.size(); ++r)
    std::copy(rows[r], rows[r] + width, t.data<float>() + r * width);
  return t;
}

// max |a - b| / max |b|.
double RelativeDiff(const float* a, const double* b, int64_t n) {
  double diff = 0, mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i])) return INFINITY;
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    mag = std::max(mag, std::fabs(b[i]));
  }
  return diff / mag;
}

// Runs one scenario on one ISA: prefixes written in one MlaWriteCache call, the new tokens in
// another, then MlaAttention in each mode; checks the cache and the outputs.
void RunScenario(const Scenario& s, const TestWeight& kv_b, Isa isa) {
  CpuOps ops(2, isa);
  LatentCache cache(LatentCacheShape{kNumLayers, kLora, kRope, kPageSize, kNumPages});
  for (int l = 0; l < kNumLayers; ++l) {
    for (int64_t p = 0; p < kNumPages; ++p) {
      for (int64_t slot = 0; slot < kPageSize; ++slot) {
        std::fill_n(cache.Token(l, p, slot), kLora + kRope, kNaN);
      }
    }
  }
  RopeTable rope{s.cos.data(), s.sin.data(), kPositions, kRope};
  Tensor kv_norm = Tensor::Zeros(DType::kF32, {kLora});
  std::copy(s.kv_norm.begin(), s.kv_norm.end(), kv_norm.data<float>());

  // The cached prefixes, as an earlier step would have written them.
  AttentionBatch prefix;
  std::vector<int32_t> prefix_pos;
  std::vector<const float*> prefix_rows;
  for (size_t si = 0; si < s.specs.size(); ++si) {
    const SeqSpec& sp = s.specs[si];
    if (sp.cached == 0) continue;
    prefix.sequences.push_back(
        {static_cast<int64_t>(prefix_rows.size()), sp.cached, 0, s.tables[si]});
    for (int64_t j = 0; j < sp.cached; ++j) {
      prefix_rows.push_back(s.kv_a[si].data() + j * (kLora + kRope));
      prefix_pos.push_back(static_cast<int32_t>(sp.pos_offset + j));
    }
  }
  if (!prefix_rows.empty()) {
    prefix.positions = prefix_pos;
    ops.MlaWriteCache(Rows(prefix_rows, kLora + kRope), kv_norm, kEps, rope, prefix, cache, kLayer);
  }
  // This step's batch.
  AttentionBatch batch;
  std::vector<int32_t> positions;
  std::vector<const float*> new_rows;
  for (size_t si = 0; si < s.specs.size(); ++si) {
    const SeqSpec& sp = s.specs[si];
    batch.sequences.push_back({s.row_begin[si], sp.n, sp.cached, s.tables[si]});
    for (int64_t i = 0; i < sp.n; ++i) {
      new_rows.push_back(s.kv_a[si].data() + (sp.cached + i) * (kLora + kRope));
      positions.push_back(static_cast<int32_t>(sp.pos_offset + sp.cached + i));
    }
  }
  batch.positions = positions;
  ops.MlaWriteCache(Rows(new_rows, kLora + kRope), kv_norm, kEps, rope, batch, cache, kLayer);

  // The cache holds the expected values at each token's slot, and nothing anywhere else.
  // Latent: float RMS over 144 values plus two products: ~1e-6 relative to the row's largest
  // value. k_pe: two products and a sum: a few ulps of |a cos| + |b sin| (<= 2 * max |x|).
  std::set<std::pair<int64_t, int64_t>> written;
  for (size_t si = 0; si < s.specs.size(); ++si) {
    const int64_t ctx = s.specs[si].cached + s.specs[si].n;
    for (int64_t j = 0; j < ctx; ++j) {
      written.insert({s.tables[si][j / kPageSize], j % kPageSize});
      const float* got = cache.SequenceToken(kLayer, s.tables[si], j);
      const double* want = s.latent[si].data() + j * (kLora + kRope);
      double row_max = 0;
      for (int64_t c = 0; c < kLora + kRope; ++c) row_max = std::max(row_max, std::fabs(want[c]));
      for (int64_t c = 0; c < kLora + kRope; ++c) {
        ASSERT_NEAR(got[c], want[c], 1e-6 * row_max)
            << "sequence " << si << " token " << j << " value " << c;
      }
    }
  }
  for (int l = 0; l < kNumLayers; ++l) {
    for (int64_t p = 0; p < kNumPages; ++p) {
      for (int64_t slot = 0; slot < kPageSize; ++slot) {
        if (l == kLayer && written.contains({p, slot})) continue;
        const float* t = cache.Token(l, p, slot);
        for (int64_t c = 0; c < kLora + kRope; ++c) {
          ASSERT_TRUE(std::isnan(t[c]))
              << "stray write: layer " << l << " page " << p << " slot " << slot;
        }
      }
    }
  }

  Tensor q = Tensor::Zeros(DType::kF32, {s.rows, kHeads * kQk});
  std::copy(s.q.begin(), s.q.end(), q.data<float>());
  auto attend = [&](MlaMode mode) {
    MlaParams p;
    p.batch = &batch;
    p.cache = &cache;
    p.layer = kLayer;
    p.kv_b = &kv_b.w;
    p.num_heads = kHeads;
    p.nope_dim = kNope;
    p.rope_dim = kRope;
    p.v_dim = kV;
    p.rope = &rope;
    p.softmax_scale = kSoftmaxScale;
    p.mode = mode;
    Tensor out = Tensor::Zeros(DType::kF32, {s.rows, kHeads * kV});
    std::fill_n(out.data<float>(), out.numel(), kNaN);
    ops.MlaAttention(p, q, out);
    return out;
  };
  const Tensor naive = attend(MlaMode::kNaive);
  const Tensor absorbed = attend(MlaMode::kAbsorbed);
  const Tensor automatic = attend(MlaMode::kAuto);
  const int64_t n = s.rows * kHeads * kV;
  std::vector<double> absorbed_d(absorbed.data<float>(), absorbed.data<float>() + n);

  // (a) The two forms are the same arithmetic reassociated: float rounding only.
  EXPECT_LE(RelativeDiff(naive.data<float>(), absorbed_d.data(), n), 1e-5) << "naive vs absorbed";
  EXPECT_LE(RelativeDiff(automatic.data<float>(), absorbed_d.data(), n), 1e-5) << "auto";
  // (b) Against float64: the cached latents and rotations are float (1e-7 relative), scores
  // sum ~170 float products, softmax and the value sums add a few ulps more; 1e-5 of the
  // largest output leaves room for that while any indexing, masking or paging error (an O(1)
  // change in some output) is far outside it.
  EXPECT_LE(RelativeDiff(naive.data<float>(), s.out.data(), n), 1e-5) << "naive vs float64";
  EXPECT_LE(RelativeDiff(absorbed.data<float>(), s.out.data(), n), 1e-5) << "absorbed vs float64";
}

class MlaTest : public ::testing::TestWithParam<DType> {
 protected:
  void Run(const std::vector<SeqSpec>& specs, uint32_t seed) {
    std::mt19937 rng(seed);
    const TestWeight kv_b = RandomKvB(GetParam(), rng);
    const Scenario s = MakeScenario(specs, kv_b, rng);
    for (Isa isa : SupportedIsas()) {
      SCOPED_TRACE(std::string("isa ") + std::string(IsaName(isa)));
      RunScenario(s, kv_b, isa);
    }
  }
};

TEST_P(MlaTest, PurePrefill) { Run({{0, 13, 0}}, 11); }
TEST_P(MlaTest, ChunkAfterCachedPrefix) { Run({{9, 6, 3}}, 12); }
TEST_P(MlaTest, SingleTokenDecode) { Run({{17, 1, 0}}, 13); }
TEST_P(MlaTest, DecodeAtFirstToken) { Run({{0, 1, 5}}, 14); }
TEST_P(MlaTest, BatchOfThreeSequences) { Run({{0, 5, 2}, {7, 3, 0}, {12, 1, 30}}, 15); }
// A context longer than the naive form's 256-token expansion block.
TEST_P(MlaTest, LongContextCrossesNaiveBlocks) { Run({{270, 3, 1}, {0, 2, 0}}, 16); }

INSTANTIATE_TEST_SUITE_P(KvB, MlaTest, ::testing::Values(DType::kF32, DType::kF8E4M3),
                         [](const auto& info) {
                           return std::string(info.param == DType::kF32 ? "F32" : "FP8");
                         });

}  // namespace
}  // namespace dserve::kernels::cpu
