// ThreadPool::ParallelFor: every index exactly once, for any loop size, grain and pool size;
// no lost wake-ups over many tiny loops; clean shutdown of an idle pool.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dserve {
namespace {

// Turns a hang into a crash with a message: a pool that loses a wake-up would otherwise block
// the test binary until an outer timeout with no hint of which test hung.
class Watchdog {
 public:
  Watchdog(const char* what, std::chrono::seconds limit) : what_(what) {
    thread_ = std::thread([this, limit] {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
        std::fprintf(stderr, "Watchdog: %s did not finish within %lld s (hang?)\n", what_,
                     static_cast<long long>(limit.count()));
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  const char* what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Runs one loop and checks each index of [0, n) was visited exactly once by calls with
// 0 <= begin < end <= n.
void CheckCoverage(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> visits(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::atomic<int> bad_ranges{0};
  std::atomic<int> calls{0};
  pool.ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
    calls.fetch_add(1);
    if (begin < 0 || begin >= end || end > n) {
      bad_ranges.fetch_add(1);
      return;
    }
    for (int64_t i = begin; i < end; ++i) visits[i].fetch_add(1, std::memory_order_relaxed);
  });
  EXPECT_EQ(bad_ranges.load(), 0);
  if (n <= 0) {
    EXPECT_EQ(calls.load(), 0) << "an empty loop must not call fn";
  }
  int64_t wrong = 0, first_wrong = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (visits[i].load() != 1) {
      if (first_wrong < 0) first_wrong = i;
      ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0) << "first wrong index " << first_wrong << " visited "
                      << (first_wrong >= 0 ? visits[first_wrong].load() : 0) << " times";
}

TEST(ThreadPool, SizeCountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(2).size(), 2);
  EXPECT_EQ(ThreadPool(5).size(), 5);
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(ThreadPool(0).size(), hw);
  EXPECT_EQ(ThreadPool(-3).size(), hw);
}

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  Watchdog watchdog("CoversEveryIndexExactlyOnce", std::chrono::seconds(60));
  const int64_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 16, 31, 100, 1000, 1001, 4097, 65537};
  const int64_t grains[] = {-4, 0, 1, 2, 3, 7, 64, 1000, 100000};
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : sizes) {
      for (int64_t grain : grains) {
        SCOPED_TRACE("threads=" + std::to_string(threads) + " n=" + std::to_string(n) +
                     " grain=" + std::to_string(grain));
        CheckCoverage(pool, n, grain);
      }
    }
    CheckCoverage(pool, -1, 1);
  }
}

// Plain (non-atomic) writes made inside the loop must be visible to the caller afterwards.
TEST(ThreadPool, WritesAreVisibleAfterReturn) {
  Watchdog watchdog("WritesAreVisibleAfterReturn", std::chrono::seconds(60));
  ThreadPool pool(4);
  for (int round = 0; round < 200; ++round) {
    std::vector<int64_t> out(3000, -1);
    pool.ParallelFor(3000, 5, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = i * 3 + round;
    });
    for (int64_t i = 0; i < 3000; ++i) ASSERT_EQ(out[i], i * 3 + round) << "round " << round;
  }
}

TEST(ThreadPool, SmallLoopsRunInlineOnTheCaller) {
  ThreadPool pool(4);
  const auto caller = std::this_thread::get_id();
  for (int64_t n : {1, 5, 64}) {
    std::set<std::thread::id> ids;
    pool.ParallelFor(n, 64, [&](int64_t b, int64_t e) {
      ids.insert(std::this_thread::get_id());
      EXPECT_EQ(b, 0);
      EXPECT_EQ(e, n);
    });
    EXPECT_EQ(ids, std::set<std::thread::id>{caller}) << "n=" << n;
  }
}

TEST(ThreadPool, SingleThreadPoolRunsEverythingOnTheCaller) {
  ThreadPool pool(1);
  EXPECT_EQ(pool.size(), 1);
  const auto caller = std::this_thread::get_id();
  std::vector<int> visits(10000, 0);
  int calls = 0;
  pool.ParallelFor(10000, 3, [&](int64_t b, int64_t e) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    ++calls;
    for (int64_t i = b; i < e; ++i) ++visits[i];
  });
  EXPECT_EQ(calls, 1);  // no workers to share with: one inline call over the whole range
  for (int v : visits) ASSERT_EQ(v, 1);
}

// Decode steps issue a loop every few microseconds; a lost wake-up or a missed loop
// generation shows up here as a hang (caught by the watchdog) or as a wrong total.
TEST(ThreadPool, ManyTinyLoopsNeitherHangNorLoseWork) {
  Watchdog watchdog("ManyTinyLoopsNeitherHangNorLoseWork", std::chrono::seconds(60));
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  int64_t expected = 0;
  for (int i = 0; i < 10000; ++i) {
    const int64_t n = 2 + i % 7;
    expected += n * (n - 1) / 2;
    pool.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      int64_t s = 0;
      for (int64_t k = b; k < e; ++k) s += k;
      total.fetch_add(s, std::memory_order_relaxed);
    });
    ASSERT_EQ(total.load(), expected) << "loop " << i;
  }
}

// More threads than cores: workers are descheduled mid-loop and must still never lose or
// repeat a chunk, nor let the caller return early.
TEST(ThreadPool, OversubscribedPoolStaysCorrect) {
  Watchdog watchdog("OversubscribedPoolStaysCorrect", std::chrono::seconds(60));
  ThreadPool pool(6);
  for (int i = 0; i < 300; ++i) CheckCoverage(pool, 1 + (i * 37) % 500, 1 + i % 5);
}

// Loops issued after the workers have gone to sleep (past their spin) must wake them.
TEST(ThreadPool, LoopsAfterIdlePeriodsStillComplete) {
  Watchdog watchdog("LoopsAfterIdlePeriodsStillComplete", std::chrono::seconds(60));
  ThreadPool pool(3);
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    CheckCoverage(pool, 1000, 1);
  }
}

TEST(ThreadPool, DestructionWhileIdle) {
  Watchdog watchdog("DestructionWhileIdle", std::chrono::seconds(60));
  // Never used: workers may still be starting or spinning when the destructor runs.
  for (int threads : {1, 2, 4, 8}) {
    for (int i = 0; i < 20; ++i) ThreadPool pool(threads);
  }
  // Used, then idle long enough for the workers to stop spinning and sleep.
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    CheckCoverage(pool, 100, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Destroyed right after a loop returns.
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(3);
    CheckCoverage(pool, 50, 1);
  }
}

}  // namespace
}  // namespace dserve
