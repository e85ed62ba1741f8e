#include "core/arena_allocator.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace dserve {
namespace {

TEST(ArenaAllocatorTest, AlignsBlocksAndFailsWhenFull) {
  ArenaAllocator a(1024, 256);
  EXPECT_EQ(a.Allocate(1), 0);
  EXPECT_EQ(a.Allocate(300), 256);  // two units
  EXPECT_EQ(a.Allocate(0), 768);    // an empty block still takes a unit
  EXPECT_EQ(a.used_bytes(), 1024);
  EXPECT_EQ(a.Allocate(1), std::nullopt);
  a.Free(256);
  EXPECT_EQ(a.Allocate(512), 256);
}

TEST(ArenaAllocatorTest, FreedNeighboursMergeIntoOneRun) {
  ArenaAllocator a(4 * 256, 256);
  const int64_t b0 = *a.Allocate(256), b1 = *a.Allocate(256), b2 = *a.Allocate(256);
  ASSERT_TRUE(a.Allocate(256).has_value());  // full
  a.Free(b0);
  a.Free(b2);
  EXPECT_EQ(a.Allocate(512), std::nullopt);  // two free units, not adjacent
  a.Free(b1);                                // joins both
  EXPECT_EQ(a.Allocate(768), 0);
  EXPECT_EQ(a.used_bytes(), 1024);
  a.ResetPeak();
  a.Free(0);
  EXPECT_EQ(a.peak_bytes(), 1024);
  a.ResetPeak();
  EXPECT_EQ(a.peak_bytes(), 256);
}

TEST(ArenaAllocatorTest, SameCallsGiveSameOffsetsAndNothingOverlaps) {
  // The property graphs rely on: replaying a capture's allocation sequence reproduces its
  // addresses; and no two live blocks overlap.
  auto run = [](std::vector<int64_t>* offsets) {
    ArenaAllocator a(1 << 20, 256);
    std::mt19937 rng(7);
    std::vector<std::pair<int64_t, int64_t>> live;  // offset, bytes
    for (int i = 0; i < 2000; ++i) {
      if (!live.empty() && rng() % 3 == 0) {
        const size_t k = rng() % live.size();
        a.Free(live[k].first);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
        continue;
      }
      const int64_t bytes = static_cast<int64_t>(rng() % 20000);
      const std::optional<int64_t> o = a.Allocate(bytes);
      if (!o) continue;
      for (const auto& [off, len] : live) {
        ASSERT_TRUE(*o + bytes <= off || off + len <= *o) << "overlap at step " << i;
      }
      EXPECT_EQ(*o % 256, 0);
      live.emplace_back(*o, std::max<int64_t>(bytes, 1));
      offsets->push_back(*o);
    }
    for (const auto& [off, len] : live) a.Free(off);
    EXPECT_EQ(a.used_bytes(), 0);
    EXPECT_EQ(a.Allocate(1 << 20), 0);  // everything merged back into one run
  };
  std::vector<int64_t> first, second;
  run(&first);
  run(&second);
  EXPECT_GT(first.size(), 500u);
  EXPECT_EQ(first, second);
}

}  // namespace
}  // namespace dserve
