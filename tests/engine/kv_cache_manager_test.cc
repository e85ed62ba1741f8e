#include "engine/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace dserve::engine {
namespace {

constexpr int64_t kPage = 4;

// A manager whose copy_page calls are recorded.
struct Fixture {
  explicit Fixture(int64_t num_pages, bool prefix_caching = true)
      : manager({.num_pages = num_pages, .page_size = kPage,
                 .enable_prefix_caching = prefix_caching},
                [this](int32_t src, int32_t dst) { copies.emplace_back(src, dst); }) {}

  std::vector<std::pair<int32_t, int32_t>> copies;
  KvCacheManager manager;
};

void ExpectConsistent(const KvCacheManager& m) {
  absl::Status status = m.CheckInvariants();
  EXPECT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(m.num_free_pages() + m.num_cached_pages() + m.num_used_pages(), m.num_pages());
}

std::vector<int32_t> Table(const KvCacheManager& m, SeqId id) {
  auto t = m.BlockTable(id);
  return {t.begin(), t.end()};
}

// Tokens 0..n-1 offset by `base`, so different bases give different pages.
std::vector<int32_t> Iota(int64_t n, int32_t base = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = base + static_cast<int32_t>(i);
  return v;
}

// Starts, reserves, computes everything of `tokens`; returns the covered token count.
int64_t RunPrompt(KvCacheManager& m, SeqId id, const std::vector<int32_t>& tokens) {
  const int64_t covered = m.StartSequence(id, tokens);
  const int64_t n = static_cast<int64_t>(tokens.size());
  EXPECT_TRUE(m.Reserve(id, covered, n));
  m.MarkComputed(id, tokens, n);
  ExpectConsistent(m);
  return covered;
}

TEST(KvCacheManagerTest, AllocationAndFreeAccounting) {
  Fixture f(8);
  KvCacheManager& m = f.manager;
  ExpectConsistent(m);
  EXPECT_EQ(m.num_free_pages(), 8);
  EXPECT_EQ(m.StartSequence(1, Iota(10)), 0);
  EXPECT_EQ(m.PagesNeeded(1, 0, 10), 3);
  ASSERT_TRUE(m.Reserve(1, 0, 10));
  ExpectConsistent(m);
  EXPECT_EQ(m.num_used_pages(), 3);
  EXPECT_EQ(m.num_free_pages(), 5);
  EXPECT_EQ(m.BlockTable(1).size(), 3u);
  // Growing within the last page takes nothing; crossing into a new one takes one.
  EXPECT_EQ(m.PagesNeeded(1, 10, 12), 0);
  EXPECT_EQ(m.PagesNeeded(1, 10, 13), 1);
  ASSERT_TRUE(m.Reserve(1, 10, 13));
  EXPECT_EQ(m.num_used_pages(), 4);
  for (int32_t p : m.BlockTable(1)) EXPECT_EQ(m.RefCount(p), 1);
  EXPECT_EQ(m.num_sequences(), 1);
  m.Free(1);  // never marked computed: nothing registered, everything free
  ExpectConsistent(m);
  EXPECT_FALSE(m.HasSequence(1));
  EXPECT_EQ(m.num_sequences(), 0);
  EXPECT_EQ(m.num_free_pages(), 8);
  EXPECT_EQ(m.num_cached_pages(), 0);
}

TEST(KvCacheManagerTest, ReserveFailsWithoutSideEffects) {
  Fixture f(4);
  KvCacheManager& m = f.manager;
  m.StartSequence(1, Iota(12));
  ASSERT_TRUE(m.Reserve(1, 0, 12));
  m.StartSequence(2, Iota(9, 100));
  EXPECT_EQ(m.PagesNeeded(2, 0, 9), 3);
  EXPECT_EQ(m.num_allocatable_pages(), 1);
  EXPECT_FALSE(m.Reserve(2, 0, 9));
  ExpectConsistent(m);
  EXPECT_TRUE(m.BlockTable(2).empty());
  EXPECT_EQ(m.num_free_pages(), 1);
  EXPECT_EQ(m.num_used_pages(), 3);
  // What PagesNeeded says is exactly what Reserve takes.
  EXPECT_EQ(m.PagesNeeded(2, 0, 4), 1);
  ASSERT_TRUE(m.Reserve(2, 0, 4));
  EXPECT_EQ(m.num_allocatable_pages(), 0);
  EXPECT_EQ(m.PagesNeeded(2, 4, 4), 0);
  EXPECT_TRUE(m.Reserve(2, 4, 4));  // nothing to write: always fits
  EXPECT_FALSE(m.Reserve(2, 4, 5));
  ExpectConsistent(m);
}

TEST(KvCacheManagerTest, CopyOnWriteReserveFailsWithoutSideEffects) {
  Fixture f(2);
  KvCacheManager& m = f.manager;
  m.StartSequence(1, Iota(6));
  ASSERT_TRUE(m.Reserve(1, 0, 6));
  m.Fork(1, 2);
  EXPECT_EQ(m.PagesNeeded(2, 6, 7), 1);  // the shared partial page must be copied
  const auto before = Table(m, 2);
  EXPECT_FALSE(m.Reserve(2, 6, 7));
  EXPECT_TRUE(f.copies.empty());
  EXPECT_EQ(Table(m, 2), before);
  EXPECT_EQ(m.RefCount(before[1]), 2);
  ExpectConsistent(m);
}

TEST(KvCacheManagerTest, PrefixHitAttachesCachedPages) {
  Fixture f(16);
  KvCacheManager& m = f.manager;
  const std::vector<int32_t> a = Iota(14);  // 3.5 pages
  EXPECT_EQ(RunPrompt(m, 1, a), 0);
  const auto a_table = Table(m, 1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(m.IsRegistered(a_table[i]));
  EXPECT_FALSE(m.IsRegistered(a_table[3]));  // partial page
  m.Free(1);
  ExpectConsistent(m);
  EXPECT_EQ(m.num_cached_pages(), 3);
  EXPECT_EQ(m.num_free_pages(), 13);

  std::vector<int32_t> b = Iota(14);
  b[9] = 999;  // third page differs
  m.ResetStats();
  EXPECT_EQ(m.StartSequence(2, b), 2 * kPage);
  ExpectConsistent(m);
  ASSERT_EQ(Table(m, 2), (std::vector<int32_t>{a_table[0], a_table[1]}));
  EXPECT_EQ(m.RefCount(a_table[0]), 1);
  EXPECT_EQ(m.num_cached_pages(), 1);  // A's third page is still cached
  EXPECT_EQ(m.stats().prefix_query_tokens, 14);
  EXPECT_EQ(m.stats().prefix_hit_tokens, 8);
  // B continues from the covered prefix.
  EXPECT_EQ(m.PagesNeeded(2, 8, 14), 2);
  ASSERT_TRUE(m.Reserve(2, 8, 14));
  m.MarkComputed(2, b, 14);
  ExpectConsistent(m);

  // A second holder of a hit page shares it.
  EXPECT_EQ(m.StartSequence(3, Iota(9)), 2 * kPage);
  EXPECT_EQ(m.RefCount(a_table[0]), 2);
  EXPECT_EQ(m.PagesNeeded(3, 8, 9), 1);  // the write starts in a fresh page: no copy
  // The "leave one token" cap: exactly two full pages match only one.
  EXPECT_EQ(m.StartSequence(4, Iota(8)), kPage);
  EXPECT_EQ(m.StartSequence(5, Iota(4)), 0);
  EXPECT_EQ(m.StartSequence(6, {}), 0);
  // And all three of A's full pages when there is a token past them.
  ASSERT_EQ(m.StartSequence(7, Iota(13)), 3 * kPage);
  EXPECT_EQ(m.BlockTable(7)[2], a_table[2]);
  ExpectConsistent(m);
  EXPECT_EQ(m.stats().prefix_query_tokens, 14 + 9 + 8 + 4 + 0 + 13);
  EXPECT_EQ(m.stats().prefix_hit_tokens, 8 + 8 + 4 + 0 + 0 + 12);
}

TEST(KvCacheManagerTest, HashChainsOverThePrefix) {
  Fixture f(16);
  KvCacheManager& m = f.manager;
  // Pages X, Y then one token.
  std::vector<int32_t> a = {1, 1, 1, 1, 2, 2, 2, 2, 3};
  RunPrompt(m, 1, a);
  m.Free(1);
  // Z, Y: the page Y is identical, but after a different prefix, so no match.
  std::vector<int32_t> b = {5, 5, 5, 5, 2, 2, 2, 2, 3};
  EXPECT_EQ(m.StartSequence(2, b), 0);
  // Y alone at the start is a different page chain too.
  EXPECT_EQ(m.StartSequence(3, std::vector<int32_t>{2, 2, 2, 2, 3}), 0);
  EXPECT_EQ(m.StartSequence(4, a), 2 * kPage);
  ExpectConsistent(m);
}

TEST(KvCacheManagerTest, EvictsLeastRecentlyReleasedTailFirst) {
  Fixture f(4);
  KvCacheManager& m = f.manager;
  const std::vector<int32_t> a = Iota(9);  // 2 full pages + 1 token
  RunPrompt(m, 1, a);
  const auto a_table = Table(m, 1);
  m.Free(1);
  // Released last to first: the partial page is freed, then page 1, then page 0 are cached.
  EXPECT_EQ(m.num_cached_pages(), 2);
  EXPECT_EQ(m.num_free_pages(), 2);

  m.StartSequence(2, Iota(12, 100));
  ASSERT_TRUE(m.Reserve(2, 0, 12));  // 2 free pages, then evicts one cached page
  ExpectConsistent(m);
  EXPECT_EQ(m.stats().evictions, 1);
  const auto b_table = Table(m, 2);
  ASSERT_EQ(b_table.size(), 3u);
  EXPECT_EQ(b_table[2], a_table[1]);  // A's tail page went first
  EXPECT_FALSE(m.IsRegistered(a_table[1]));
  EXPECT_TRUE(m.IsRegistered(a_table[0]));
  // A's prompt now matches only its head page: the evicted hash is gone.
  ASSERT_EQ(m.StartSequence(3, a), kPage);
  EXPECT_EQ(m.BlockTable(3)[0], a_table[0]);
  m.Free(3);
  m.Free(2);
  ExpectConsistent(m);
}

TEST(KvCacheManagerTest, EvictsInReleaseOrderAcrossSequences) {
  Fixture f(4);
  KvCacheManager& m = f.manager;
  RunPrompt(m, 1, Iota(5));       // page a0 full
  RunPrompt(m, 2, Iota(5, 100));  // page b0 full
  const int32_t a0 = m.BlockTable(1)[0];
  const int32_t b0 = m.BlockTable(2)[0];
  m.Free(1);
  m.Free(2);
  // Re-touching A's page makes it most recent again.
  EXPECT_EQ(m.StartSequence(3, Iota(5)), kPage);
  m.Free(3);
  m.StartSequence(4, Iota(12, 200));
  ASSERT_TRUE(m.Reserve(4, 0, 12));  // 2 free + evict b0 (released before a0's last release)
  EXPECT_EQ(m.BlockTable(4)[2], b0);
  EXPECT_TRUE(m.IsRegistered(a0));
  ExpectConsistent(m);
}

TEST(KvCacheManagerTest, DuplicateRegistrationKeepsOnePage) {
  Fixture f(8);
  KvCacheManager& m = f.manager;
  const std::vector<int32_t> p = Iota(9);
  m.StartSequence(1, p);
  m.StartSequence(2, p);  // nothing cached yet: both compute the same prefix
  ASSERT_TRUE(m.Reserve(1, 0, 9));
  ASSERT_TRUE(m.Reserve(2, 0, 9));
  m.MarkComputed(1, p, 9);
  m.MarkComputed(2, p, 9);
  ExpectConsistent(m);
  const auto t1 = Table(m, 1), t2 = Table(m, 2);
  ASSERT_EQ(t1.size(), 3u);
  ASSERT_EQ(t2.size(), 3u);
  EXPECT_TRUE(m.IsRegistered(t1[0]) && m.IsRegistered(t1[1]));
  EXPECT_FALSE(m.IsRegistered(t2[0]) || m.IsRegistered(t2[1]));
  m.Free(2);
  EXPECT_EQ(m.num_cached_pages(), 0);
  EXPECT_EQ(m.num_free_pages(), 5);
  m.Free(1);
  EXPECT_EQ(m.num_cached_pages(), 2);
  EXPECT_EQ(m.num_free_pages(), 6);
  ExpectConsistent(m);
  EXPECT_EQ(m.StartSequence(3, p), 2 * kPage);
  EXPECT_EQ(Table(m, 3), (std::vector<int32_t>{t1[0], t1[1]}));
}

TEST(KvCacheManagerTest, ForkCopiesSharedPartialPageOnWrite) {
  Fixture f(8);
  KvCacheManager& m = f.manager;
  const std::vector<int32_t> p = Iota(6);  // 1.5 pages
  RunPrompt(m, 1, p);
  const auto parent = Table(m, 1);
  m.Fork(1, 2);
  ExpectConsistent(m);
  EXPECT_EQ(Table(m, 2), parent);
  EXPECT_EQ(m.RefCount(parent[0]), 2);
  EXPECT_EQ(m.RefCount(parent[1]), 2);

  EXPECT_EQ(m.PagesNeeded(2, 6, 7), 1);   // copy only
  EXPECT_EQ(m.PagesNeeded(2, 6, 10), 2);  // copy + one new page
  const int64_t free_before = m.num_free_pages();
  ASSERT_TRUE(m.Reserve(2, 6, 7));
  ExpectConsistent(m);
  EXPECT_EQ(m.num_free_pages(), free_before - 1);
  const auto child = Table(m, 2);
  ASSERT_EQ(child.size(), 2u);
  ASSERT_EQ(f.copies.size(), 1u);
  EXPECT_EQ(f.copies[0], std::make_pair(parent[1], child[1]));
  EXPECT_NE(child[1], parent[1]);
  EXPECT_EQ(child[0], parent[0]);
  EXPECT_EQ(Table(m, 1), parent);
  EXPECT_EQ(m.RefCount(parent[0]), 2);
  EXPECT_EQ(m.RefCount(parent[1]), 1);
  EXPECT_EQ(m.RefCount(child[1]), 1);
  EXPECT_EQ(m.stats().cow_copies, 1);

  // The parent is now the sole owner of its partial page: it writes in place.
  EXPECT_EQ(m.PagesNeeded(1, 6, 7), 0);
  ASSERT_TRUE(m.Reserve(1, 6, 7));
  EXPECT_EQ(f.copies.size(), 1u);
  EXPECT_EQ(Table(m, 1), parent);
  EXPECT_EQ(m.stats().cow_copies, 1);

  // Both complete page 1 with different tokens; each registers its own copy.
  std::vector<int32_t> p1 = p, p2 = p;
  p1.insert(p1.end(), {10, 11});
  p2.insert(p2.end(), {20, 21});
  ASSERT_TRUE(m.Reserve(1, 7, 8));
  ASSERT_TRUE(m.Reserve(2, 7, 8));
  m.MarkComputed(1, p1, 8);
  m.MarkComputed(2, p2, 8);
  EXPECT_TRUE(m.IsRegistered(parent[1]));
  EXPECT_TRUE(m.IsRegistered(child[1]));
  m.Free(1);
  m.Free(2);
  ExpectConsistent(m);
  EXPECT_EQ(m.num_cached_pages(), 3);
  EXPECT_EQ(m.num_used_pages(), 0);
}

TEST(KvCacheManagerTest, PrefixCachingOffCachesNothing) {
  Fixture f(8, /*prefix_caching=*/false);
  KvCacheManager& m = f.manager;
  EXPECT_EQ(RunPrompt(m, 1, Iota(14)), 0);
  m.Free(1);
  EXPECT_EQ(m.num_cached_pages(), 0);
  EXPECT_EQ(m.num_free_pages(), 8);
  EXPECT_EQ(RunPrompt(m, 2, Iota(14)), 0);
  for (int32_t p : m.BlockTable(2)) EXPECT_FALSE(m.IsRegistered(p));
  m.Free(2);
  ExpectConsistent(m);
  EXPECT_EQ(m.num_free_pages(), 8);
  EXPECT_EQ(m.stats().prefix_query_tokens, 0);
  EXPECT_EQ(m.stats().prefix_hit_tokens, 0);
}

TEST(KvCacheManagerDeathTest, RejectsDuplicateAndUnknownIds) {
  Fixture f(4);
  f.manager.StartSequence(1, Iota(3));
  EXPECT_DEATH(f.manager.StartSequence(1, Iota(3)), "already exists");
  EXPECT_DEATH(f.manager.Free(2), "unknown sequence");
  EXPECT_DEATH(f.manager.Fork(1, 1), "already exists");
}

// Random operations against a simulated page store: every page's token slots are written as a
// forward step would, so any page handed to two writers, reused while cached content is still
// attached, or attached with the wrong content shows up as a token mismatch.
class Stress {
 public:
  Stress(uint32_t seed, bool prefix_caching)
      : rng_(seed),
        store_(kPages, std::vector<int32_t>(kPage, -1)),
        manager_({.num_pages = kPages, .page_size = kPage,
                  .enable_prefix_caching = prefix_caching},
                 [this](int32_t src, int32_t dst) { store_[dst] = store_[src]; }) {}

  void Run(int steps) {
    for (int step = 0; step < steps && !testing::Test::HasFailure(); ++step) {
      const int op = Rand(100);
      if (op < 15 && live_.size() < 24) {
        Start();
      } else if (op < 22 && !live_.empty() && live_.size() < 24) {
        Fork();
      } else if (op < 35 && !live_.empty()) {
        FreeAt(Rand(live_.size()));
      } else if (!live_.empty()) {
        Advance(Rand(live_.size()));
      }
      Check();
    }
    while (!live_.empty()) FreeAt(0);
    Check();
    EXPECT_EQ(manager_.num_used_pages(), 0);
    EXPECT_EQ(manager_.num_free_pages() + manager_.num_cached_pages(), kPages);
  }

  const KvCacheManager& manager() const { return manager_; }

 private:
  static constexpr int64_t kPages = 48;
  struct Seq {
    SeqId id;
    std::vector<int32_t> tokens;
    int64_t computed;  // tokens written to the store
  };

  size_t Rand(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  int32_t Token() { return static_cast<int32_t>(Rand(3)); }  // tiny alphabet: prefixes collide

  void Start() {
    std::vector<int32_t> tokens;
    if (!history_.empty() && Rand(2) == 0) {
      const auto& old = history_[Rand(history_.size())];
      tokens.assign(old.begin(), old.begin() + static_cast<int64_t>(Rand(old.size() + 1)));
    }
    const size_t extra = 1 + Rand(24);
    for (size_t i = 0; i < extra; ++i) tokens.push_back(Token());
    const SeqId id = next_id_++;
    const int64_t covered = manager_.StartSequence(id, tokens);
    EXPECT_EQ(covered % kPage, 0);
    EXPECT_LT(covered, static_cast<int64_t>(tokens.size()));
    ASSERT_EQ(static_cast<int64_t>(manager_.BlockTable(id).size()), covered / kPage);
    live_.push_back({id, std::move(tokens), covered});
    ExpectStoreMatches(live_.back());
  }

  void Fork() {
    Seq child = live_[Rand(live_.size())];
    manager_.Fork(child.id, next_id_);
    child.id = next_id_++;
    live_.push_back(std::move(child));
  }

  void FreeAt(size_t i) {
    history_.push_back(live_[i].tokens);
    if (history_.size() > 32) history_.erase(history_.begin());
    manager_.Free(live_[i].id);
    live_.erase(live_.begin() + static_cast<int64_t>(i));
  }

  void Advance(size_t i) {
    Seq& s = live_[i];
    if (s.computed == static_cast<int64_t>(s.tokens.size())) {
      if (s.tokens.size() >= 64) return FreeAt(i);
      s.tokens.push_back(Token());  // decode: one sampled token
    }
    const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.computed;
    const int64_t end = s.computed + 1 + static_cast<int64_t>(Rand(remaining));
    const int64_t needed = manager_.PagesNeeded(s.id, s.computed, end);
    const int64_t allocatable = manager_.num_allocatable_pages();
    const auto table_before = Table(manager_, s.id);
    const bool ok = manager_.Reserve(s.id, s.computed, end);
    ASSERT_EQ(ok, needed <= allocatable);
    if (!ok) {
      EXPECT_EQ(Table(manager_, s.id), table_before);
      EXPECT_EQ(manager_.num_allocatable_pages(), allocatable);
      return FreeAt(Rand(live_.size()));  // preemption
    }
    EXPECT_EQ(manager_.num_allocatable_pages(), allocatable - needed);
    const auto table = manager_.BlockTable(s.id);
    ASSERT_EQ(static_cast<int64_t>(table.size()), (end + kPage - 1) / kPage);
    for (int64_t t = s.computed; t < end; ++t) {
      const int32_t page = table[t / kPage];
      ASSERT_EQ(manager_.RefCount(page), 1) << "write to shared page " << page;
      store_[page][t % kPage] = s.tokens[t];
    }
    s.computed = end;
    manager_.MarkComputed(s.id, s.tokens, end);
  }

  void ExpectStoreMatches(const Seq& s) {
    const auto table = manager_.BlockTable(s.id);
    for (int64_t t = 0; t < s.computed; ++t) {
      ASSERT_EQ(store_[table[t / kPage]][t % kPage], s.tokens[t])
          << "sequence " << s.id << " token " << t;
    }
  }

  void Check() {
    ExpectConsistent(manager_);
    for (const Seq& s : live_) {
      ExpectStoreMatches(s);
      // A shared page holds only tokens its holders have all written: full prefix pages, or the
      // partial last page of a fork that nobody has written past yet.
      const auto table = manager_.BlockTable(s.id);
      for (size_t i = 0; i < table.size(); ++i) {
        if (manager_.RefCount(table[i]) > 1) {
          EXPECT_LT(static_cast<int64_t>(i) * kPage, s.computed) << "shared unwritten page";
        }
      }
    }
  }

  std::mt19937 rng_;
  std::vector<std::vector<int32_t>> store_;
  KvCacheManager manager_;
  std::vector<Seq> live_;
  std::vector<std::vector<int32_t>> history_;
  SeqId next_id_ = 0;
};

TEST(KvCacheManagerTest, RandomizedStress) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    Stress stress(seed, /*prefix_caching=*/true);
    stress.Run(4000);
    // The run must have exercised every path it checks.
    const KvCacheStats& s = stress.manager().stats();
    EXPECT_GT(s.prefix_hit_tokens, 0);
    EXPECT_GT(s.evictions, 0);
    EXPECT_GT(s.cow_copies, 0);
  }
}

TEST(KvCacheManagerTest, RandomizedStressWithoutPrefixCaching) {
  Stress stress(7, /*prefix_caching=*/false);
  stress.Run(3000);
  EXPECT_EQ(stress.manager().num_cached_pages(), 0);
  EXPECT_EQ(stress.manager().num_free_pages(), stress.manager().num_pages());
  EXPECT_GT(stress.manager().stats().cow_copies, 0);
}

}  // namespace
}  // namespace dserve::engine

namespace dserve::engine {
namespace {

// The engine computes prompt and generated tokens with different MLA forms, so a page is
// reused only under the same prompt/generated split of its tokens.
TEST(KvCacheManagerTest, PagesAreReusedOnlyUnderTheSamePromptSplit) {
  KvCacheManager m(KvCacheConfig{16, 4, true}, [](int32_t, int32_t) {});
  std::vector<int32_t> tokens = {5, 6, 7, 8, 9, 10, 11, 12, 13};
  // Sequence 1: a 6-token prompt, then 3 generated tokens; all 9 computed.
  m.StartSequence(1, tokens, /*prompt_len=*/6);
  ASSERT_TRUE(m.Reserve(1, 0, 9));
  m.MarkComputed(1, tokens, 9);
  m.Free(1);
  // The same 9 tokens as one prompt: page 0 (all prompt in both) is reused, page 1 (two
  // prompt + two generated tokens before) is not.
  EXPECT_EQ(m.StartSequence(2, tokens), 4);
  m.Free(2);
  // Re-admitting with sequence 1's own split (preemption) reuses both pages.
  EXPECT_EQ(m.StartSequence(3, tokens, 6), 8);
  m.Free(3);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

}  // namespace
}  // namespace dserve::engine
