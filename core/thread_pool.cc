#include "core/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define DSERVE_PAUSE() _mm_pause()
#else
#define DSERVE_PAUSE() std::this_thread::yield()
#endif

namespace dserve {
namespace {
// Workers spin this many rounds before sleeping: decode steps issue loops every few
// microseconds, and a futex wake-up costs more than that.
constexpr int kSpinRounds = 1 << 14;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::TakeChunks() {
  for (;;) {
    const int64_t begin = next_.fetch_add(grain_, std::memory_order_relaxed);
    if (begin >= n_) break;
    body_(ctx_, begin, std::min(n_, begin + grain_));
  }
}

void ThreadPool::Run(Body body, void* ctx, int64_t n, int64_t grain) {
  body_ = body;
  ctx_ = ctx;
  n_ = n;
  // Chunks no smaller than `grain`, but enough of them to balance uneven work.
  const int64_t balanced = (n + 4 * size() - 1) / (4 * size());
  grain_ = std::max(grain, balanced);
  next_.store(0, std::memory_order_relaxed);
  busy_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  TakeChunks();
  while (busy_.load(std::memory_order_acquire) != 0) DSERVE_PAUSE();
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t current = generation_.load(std::memory_order_acquire);
    for (int spin = 0; current == seen && spin < kSpinRounds; ++spin) {
      DSERVE_PAUSE();
      current = generation_.load(std::memory_order_acquire);
    }
    while (current == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      current = generation_.load(std::memory_order_acquire);
    }
    seen = current;
    if (stop_.load()) return;
    TakeChunks();
    busy_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace dserve
