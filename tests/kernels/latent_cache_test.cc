// The latent cache's three token formats on the host: F32 exact, BF16 rounded to nearest even,
// and FP8 (E4M3 latent with an F32 scale per 128 values, BF16 k_pe) checked byte by byte against
// the format's definition and within E4M3's rounding of float64 values; copy-on-write of pages.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/latent_cache.h"

namespace dserve::kernels {
namespace {

LatentCacheShape Shape(DType dtype, int64_t kv_lora = 512, int64_t rope = 64) {
  return LatentCacheShape{2, kv_lora, rope, 16, 4, dtype};
}

TEST(LatentCacheTest, TokenBytesPerFormat) {
  EXPECT_EQ(Shape(DType::kF32).token_bytes(), 576 * 4);
  EXPECT_EQ(Shape(DType::kBF16).token_bytes(), 1152);
  EXPECT_EQ(Shape(DType::kF8E4M3).token_bytes(), 656);  // DeepSeek-V3: 512 + 4 x 4 + 64 x 2
  EXPECT_EQ(Shape(DType::kF8E4M3, 96, 16).token_bytes(), 96 + 4 + 32);  // one partial group
  const LatentCache cache(Shape(DType::kF8E4M3));
  EXPECT_EQ(cache.storage().bytes(), static_cast<size_t>(2 * 4 * 16 * 656));
  EXPECT_EQ(cache.ByteOffset(1, 2, 3), ((1 * 4 + 2) * 16 + 3) * 656);
}

// E4M3 keeps 3 mantissa bits: a normal value is off by at most half a step, 2^-4 of itself;
// below 2^-6 (times the scale) the step is 2^-9.
double Fp8Bound(double x, double scale) {
  return std::max(std::ldexp(std::fabs(x), -4), std::ldexp(scale, -10)) * (1 + 1e-6);
}

TEST(LatentCacheTest, Fp8TokensFollowTheFormat) {
  const LatentCacheShape s = Shape(DType::kF8E4M3, 320, 64);  // groups of 128, 128, 64
  LatentCache cache(s);
  const std::vector<int32_t> table = {2, 0};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> token(s.token_dim()), back(s.token_dim());
  for (int64_t index = 0; index < 20; ++index) {
    for (float& v : token) v = normal(rng) * (index % 3 == 0 ? 30.0f : 0.3f);
    if (index == 5) std::fill(token.begin() + 128, token.begin() + 256, 0.0f);  // a zero group
    cache.WriteToken(1, table, index, token.data());
    cache.ReadTokens(1, table, index, 1, back.data());
    const uint8_t* bytes = static_cast<const uint8_t*>(cache.storage().raw()) +
                           cache.ByteOffset(1, table[index / 16], index % 16);
    for (int64_t g = 0; g < 3; ++g) {
      const int64_t begin = g * 128, end = std::min<int64_t>(320, begin + 128);
      double amax = 0;
      for (int64_t c = begin; c < end; ++c) amax = std::max(amax, std::fabs(double{token[c]}));
      float scale;
      std::memcpy(&scale, bytes + 320 + 4 * g, 4);
      EXPECT_EQ(scale, amax > 0 ? static_cast<float>(amax) / 448.0f : 1.0f) << index << " " << g;
      for (int64_t c = begin; c < end; ++c) {
        EXPECT_LE(std::fabs(back[c] - double{token[c]}), Fp8Bound(token[c], scale))
            << "token " << index << " value " << c;
        // The group's largest magnitude is exactly +-448 in E4M3.
        if (amax > 0 && std::fabs(double{token[c]}) == amax) {
          EXPECT_EQ(bytes[c] & 0x7F, 0x7E) << index << " " << c;
        }
      }
    }
    for (int64_t c = 0; c < 64; ++c) {
      uint16_t b;
      std::memcpy(&b, bytes + 320 + 12 + 2 * c, 2);
      EXPECT_EQ(b, FloatToBf16(token[320 + c])) << "k_pe " << c;
      EXPECT_EQ(back[320 + c], Bf16ToFloat(b));
    }
  }
}

TEST(LatentCacheTest, F32IsExactAndBf16RoundsToNearestEven) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    const LatentCacheShape s = Shape(dtype, 128, 16);
    LatentCache cache(s);
    const std::vector<int32_t> table = {3, 1};
    std::vector<float> token(s.token_dim()), back(s.token_dim());
    for (float& v : token) v = normal(rng);
    cache.WriteToken(0, table, 17, token.data());
    cache.ReadTokens(0, table, 17, 1, back.data());
    for (int64_t c = 0; c < s.token_dim(); ++c) {
      const float want = dtype == DType::kF32 ? token[c] : Bf16ToFloat(FloatToBf16(token[c]));
      EXPECT_EQ(back[c], want) << DTypeName(dtype) << " value " << c;
      // BF16 keeps 8 significant bits: within half a step, 2^-8 of the value.
      EXPECT_LE(std::fabs(back[c] - double{token[c]}), std::ldexp(std::fabs(token[c]), -8));
    }
  }
}

TEST(LatentCacheTest, CopyPageCopiesEveryLayerOfTheFp8Format) {
  const LatentCacheShape s = Shape(DType::kF8E4M3, 128, 16);
  LatentCache cache(s);
  uint8_t* base = static_cast<uint8_t*>(cache.storage().raw());
  for (size_t i = 0; i < cache.storage().bytes(); ++i) base[i] = static_cast<uint8_t>(i * 7 + 1);
  const std::vector<uint8_t> before(base, base + cache.storage().bytes());
  cache.CopyPage(1, 3);
  const int64_t page = s.page_size * s.token_bytes();
  for (int layer = 0; layer < s.num_layers; ++layer) {
    for (int64_t p = 0; p < s.num_pages; ++p) {
      const int64_t at = cache.ByteOffset(layer, p, 0);
      const int64_t from = p == 3 ? cache.ByteOffset(layer, 1, 0) : at;
      EXPECT_EQ(std::memcmp(base + at, before.data() + from, page), 0)
          << "layer " << layer << " page " << p;
    }
  }
}

}  // namespace
}  // namespace dserve::kernels
