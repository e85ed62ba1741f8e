// ThreadPool: a fixed set of worker threads that run one parallel loop at a time.
// The calling thread takes part, so ThreadPool(2) uses the caller plus one worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace dserve {

class ThreadPool {
 public:
  // num_threads <= 0 means one per hardware thread.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over [0, n) in chunks of about `grain` items, spread over the threads,
  // and returns when all are done. Small loops (n <= grain) run inline on the caller.
  template <typename F>
  void ParallelFor(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (n <= grain || workers_.empty()) {
      fn(int64_t{0}, n);
      return;
    }
    auto trampoline = [](void* ctx, int64_t begin, int64_t end) {
      (*static_cast<F*>(ctx))(begin, end);
    };
    Run(trampoline, &fn, n, grain);
  }

 private:
  using Body = void (*)(void*, int64_t, int64_t);
  void Run(Body body, void* ctx, int64_t n, int64_t grain);
  void WorkerLoop();
  void TakeChunks();

  std::vector<std::thread> workers_;
  // The current loop; written by the caller before `generation_` is bumped.
  Body body_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  std::atomic<int64_t> next_{0};
  // Admission to the current loop: bit 63 closed, bits 32..62 the loop's generation, low 32
  // bits the workers inside. The caller closes the loop once every chunk is taken and waits
  // only for workers that got in, so a worker the OS has descheduled never holds it up.
  std::atomic<uint64_t> entry_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace dserve
