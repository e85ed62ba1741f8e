// RopeCache: YaRN (and plain RoPE) frequencies and mscale against DeepSeek's formulas written
// out here in double, and the cos/sin tables it grows on demand.
#include "models/rope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "tests/support/test_env.h"

namespace dserve::models {
namespace {

using ::dserve::testing::TestdataPath;

struct Expected {
  std::vector<double> inv_freq;
  double mscale = 1.0;
};

double YarnGetMscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// DeepSeek's DeepseekV3YarnRotaryEmbedding (modeling_deepseek.py), step by step:
// freq_extra = base^(-2i/d), freq_inter = freq_extra / factor, the correction range
// [floor(dim(beta_fast)), ceil(dim(beta_slow))] clamped to [0, d-1], a linear ramp over it,
// inv_freq = freq_inter * (1 - mask) + freq_extra * mask with mask = 1 - ramp.
Expected Reference(const ModelConfig& c) {
  const double d = static_cast<double>(c.qk_rope_head_dim);
  const double base = c.rope_theta;
  Expected e;
  for (int64_t i = 0; i < c.qk_rope_head_dim / 2; ++i) {
    e.inv_freq.push_back(1.0 / std::pow(base, (2.0 * i) / d));
  }
  if (!c.rope_scaling.yarn) return e;
  const RopeScaling& y = c.rope_scaling;
  auto correction_dim = [&](double rotations) {
    return d * std::log(y.original_max_position_embeddings / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(base));
  };
  double low = std::max(0.0, std::floor(correction_dim(y.beta_fast)));
  double high = std::min(d - 1, std::ceil(correction_dim(y.beta_slow)));
  if (low == high) high += 0.001;
  for (size_t i = 0; i < e.inv_freq.size(); ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double mask = 1.0 - ramp;
    const double extra = e.inv_freq[i];
    const double inter = extra / y.factor;
    e.inv_freq[i] = inter * (1 - mask) + extra * mask;
  }
  e.mscale = YarnGetMscale(y.factor, y.mscale) / YarnGetMscale(y.factor, y.mscale_all_dim);
  return e;
}

ModelConfig Load(const char* name) {
  auto c = LoadModelConfig(TestdataPath(name));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

void ExpectMatches(const ModelConfig& c) {
  RopeCache rope(c);
  const Expected want = Reference(c);
  ASSERT_EQ(rope.inv_freq().size(), want.inv_freq.size());
  for (size_t i = 0; i < want.inv_freq.size(); ++i) {
    EXPECT_NEAR(rope.inv_freq()[i], want.inv_freq[i], 1e-14 * want.inv_freq[i]) << "i=" << i;
  }
  EXPECT_NEAR(rope.mscale(), want.mscale, 1e-14);
}

// Table values are float: cos/sin in double times mscale, rounded once; 1e-6 covers that
// rounding (~6e-8 relative) and the angle's own double error at positions up to a few
// thousand with room to spare.
void ExpectTable(const kernels::RopeTable& t, const Expected& want, int64_t pos) {
  const int64_t half = static_cast<int64_t>(want.inv_freq.size());
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * want.inv_freq[i];
    EXPECT_NEAR(t.cos[pos * half + i], std::cos(angle) * want.mscale, 1e-6)
        << "pos " << pos << " i " << i;
    EXPECT_NEAR(t.sin[pos * half + i], std::sin(angle) * want.mscale, 1e-6)
        << "pos " << pos << " i " << i;
  }
}

TEST(RopeCache, MicroV3Yarn) {
  const ModelConfig c = Load("micro-v3");
  ASSERT_TRUE(c.rope_scaling.yarn);
  ExpectMatches(c);
  // The blend must actually do something here: the lowest frequency is divided by 40, the
  // highest kept.
  RopeCache rope(c);
  EXPECT_NEAR(rope.inv_freq()[0], 1.0, 1e-15);
  EXPECT_NEAR(rope.inv_freq()[7], std::pow(10000.0, -14.0 / 16) / 40, 1e-18);
  EXPECT_EQ(rope.mscale(), 1.0);  // mscale == mscale_all_dim
}

TEST(RopeCache, MicroV2Yarn) { ExpectMatches(Load("micro-v2")); }

TEST(RopeCache, PlainRope) {
  ModelConfig c = Load("micro-v3");
  c.rope_scaling = RopeScaling{};
  RopeCache rope(c);
  ASSERT_EQ(rope.inv_freq().size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(rope.inv_freq()[i], std::pow(10000.0, -2.0 * i / 16), 1e-15) << i;
  }
  EXPECT_EQ(rope.mscale(), 1.0);
  ExpectMatches(c);
}

TEST(RopeCache, YarnVariants) {
  ModelConfig base = Load("micro-v3");
  struct Variant {
    double theta, factor, orig, fast, slow, mscale, all_dim;
    int64_t dim;
  };
  const Variant variants[] = {
      {10000, 40, 4096, 32, 1, 1.0, 0.0, 16},  // mscale != 1 through mscale_all_dim 0
      {10000, 40, 4096, 32, 1, 0.707, 1.0, 64}, {50000, 4, 2048, 16, 2, 1.0, 0.5, 32},
      {10000, 8, 64, 32, 1, 1.0, 1.0, 16},      // correction range clamped at 0
      {10000, 8, 1e9, 32, 0.01, 1.0, 1.0, 16},  // ... and at dim - 1
      {10000, 1, 4096, 32, 1, 1.0, 1.0, 16},    // factor 1: frequencies unchanged
  };
  for (const Variant& v : variants) {
    ModelConfig c = base;
    c.rope_theta = v.theta;
    c.qk_rope_head_dim = v.dim;
    c.rope_scaling.yarn = true;
    c.rope_scaling.factor = v.factor;
    c.rope_scaling.original_max_position_embeddings = v.orig;
    c.rope_scaling.beta_fast = v.fast;
    c.rope_scaling.beta_slow = v.slow;
    c.rope_scaling.mscale = v.mscale;
    c.rope_scaling.mscale_all_dim = v.all_dim;
    SCOPED_TRACE("theta " + std::to_string(v.theta) + " factor " + std::to_string(v.factor) +
                 " dim " + std::to_string(v.dim));
    ExpectMatches(c);
  }
  // mscale_all_dim 0 leaves YaRN's own mscale on cos/sin: 0.1 * ln(40) + 1.
  ModelConfig c = base;
  c.rope_scaling.mscale_all_dim = 0;
  EXPECT_NEAR(RopeCache(c).mscale(), 0.1 * std::log(40.0) + 1, 1e-14);
}

TEST(RopeCache, TableValues) {
  for (const char* name : {"micro-v3", "micro-v2"}) {
    SCOPED_TRACE(name);
    ModelConfig c = Load(name);
    c.rope_scaling.mscale_all_dim = 0.3;  // makes mscale != 1 so the fold-in is visible
    RopeCache rope(c);
    const Expected want = Reference(c);
    ASSERT_NE(want.mscale, 1.0);
    const kernels::RopeTable& t = rope.Table(100);
    EXPECT_GE(t.num_positions, 100);
    EXPECT_EQ(t.rope_dim, c.qk_rope_head_dim);
    for (int64_t pos : {0, 1, 2, 7, 50, 99}) ExpectTable(t, want, pos);
    // Position 0: cos = mscale, sin = 0 for every frequency.
    for (int64_t i = 0; i < c.qk_rope_head_dim / 2; ++i) {
      EXPECT_FLOAT_EQ(t.cos[i], static_cast<float>(want.mscale));
      EXPECT_EQ(t.sin[i], 0.0f);
    }
  }
}

TEST(RopeCache, GrowthKeepsEarlierValues) {
  const ModelConfig c = Load("micro-v3");
  RopeCache rope(c);
  const Expected want = Reference(c);
  const int64_t half = c.qk_rope_head_dim / 2;
  const kernels::RopeTable first = rope.Table(10);
  ASSERT_GE(first.num_positions, 10);
  const int64_t n1 = first.num_positions;
  const std::vector<float> cos1(first.cos, first.cos + n1 * half);
  const std::vector<float> sin1(first.sin, first.sin + n1 * half);

  const kernels::RopeTable& grown = rope.Table(3000);
  ASSERT_GE(grown.num_positions, 3000);
  for (int64_t i = 0; i < n1 * half; ++i) {
    ASSERT_EQ(grown.cos[i], cos1[i]) << i;
    ASSERT_EQ(grown.sin[i], sin1[i]) << i;
  }
  for (int64_t pos : {int64_t{0}, n1 - 1, n1, n1 + 1, int64_t{1234}, int64_t{2999}}) {
    ExpectTable(grown, want, pos);
  }
  // Asking for fewer positions never shrinks the table.
  const int64_t n2 = grown.num_positions;
  EXPECT_EQ(rope.Table(5).num_positions, n2);
  EXPECT_EQ(rope.Table(n2).num_positions, n2);
  // One past the end grows again and keeps everything.
  const kernels::RopeTable& again = rope.Table(n2 + 1);
  EXPECT_GE(again.num_positions, n2 + 1);
  ExpectTable(again, want, n2 - 1);
  ExpectTable(again, want, n2);
}

}  // namespace
}  // namespace dserve::models
