#include "core/thread_pool.h"

#include <pthread.h>

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define DSERVE_PAUSE() _mm_pause()
#else
#define DSERVE_PAUSE() std::this_thread::yield()
#endif

namespace dserve {
namespace {
constexpr uint64_t kClosed = uint64_t{1} << 63;
constexpr uint64_t kInsideMask = 0xFFFFFFFFull;
uint64_t LoopId(uint64_t generation) { return (generation & 0x7FFFFFFFull) << 32; }
// Workers spin this many rounds before sleeping: decode steps issue loops every few
// microseconds, and a futex wake-up costs more than that.
constexpr int kSpinRounds = 1 << 14;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
    pthread_setname_np(workers_.back().native_handle(), "dserve-worker");
  }
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
  const uint64_t generation = generation_.load(std::memory_order_relaxed) + 1;
  entry_.store(LoopId(generation), std::memory_order_relaxed);
  generation_.store(generation, std::memory_order_release);
  generation_.notify_all();
  TakeChunks();
  entry_.fetch_or(kClosed, std::memory_order_acq_rel);
  while ((entry_.load(std::memory_order_acquire) & kInsideMask) != 0) DSERVE_PAUSE();
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
    // Enter the loop only while it is the current one and still open.
    uint64_t e = entry_.load(std::memory_order_acquire);
    bool entered = false;
    while (!(e & kClosed) && (e & ~kInsideMask) == LoopId(current)) {
      if (entry_.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel)) {
        entered = true;
        break;
      }
    }
    if (!entered) continue;
    TakeChunks();
    entry_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace dserve
