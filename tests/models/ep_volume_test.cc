#include "models/ep_volume.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

namespace dserve::models {
namespace {

TEST(EpVolumeTest, CountsRemoteRanksOncePerToken) {
  // 8 experts on 4 ranks (2 each), 2 per token; token t's home rank is t % 4.
  const std::vector<int32_t> ids = {0, 1,   // token 0 (home 0): rank 0 only -> 0 remote
                                    0, 7,   // token 1 (home 1): ranks 0, 3 -> 2
                                    4, 5,   // token 2 (home 2): rank 2 -> 0
                                    2, 3};  // token 3 (home 3): rank 1 -> 1
  const EpVolume v = CountedEpVolume(ids, 2, 8, 4, 256);
  EXPECT_DOUBLE_EQ(v.remote_ranks, 3.0 / 4);
  EXPECT_DOUBLE_EQ(v.dispatch_bytes, 0.75 * (256 + 8));
  EXPECT_DOUBLE_EQ(v.combine_bytes, 0.75 * 512);
}

TEST(EpVolumeTest, FormulaMatchesUniformlyDrawnExperts) {
  // DeepSeek-V3: 256 experts, 8 per token. EP 8: another rank is missed with probability
  // prod_{i<8} (224 - i) / (256 - i) = 0.33817, so 7 * 0.66183 = 4.6328 remote ranks.
  EXPECT_NEAR(UniformEpVolume(256, 8, 8, 7168).remote_ranks, 4.6328, 1e-4);
  std::mt19937 rng(5);
  std::vector<int32_t> ids, pool(256);
  std::iota(pool.begin(), pool.end(), 0);
  for (int t = 0; t < 40000; ++t) {
    for (int k = 0; k < 8; ++k) {
      std::swap(pool[k], pool[k + rng() % (256 - k)]);
      ids.push_back(pool[k]);
    }
  }
  for (const int ep : {8, 16, 32}) {
    const EpVolume f = UniformEpVolume(256, 8, ep, 7168);
    const EpVolume c = CountedEpVolume(ids, 8, 256, ep, 7168);
    EXPECT_NEAR(c.remote_ranks / f.remote_ranks, 1.0, 0.01) << "EP " << ep;
  }
}

}  // namespace
}  // namespace dserve::models
