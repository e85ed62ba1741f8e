#include "cli/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/primitives.h"

namespace dserve::cli {

double MeasureReadBandwidth(size_t bytes, int threads, int runs) {
  ThreadPool pool(threads);
  const auto& prims = kernels::cpu::GetPrimitives(kernels::cpu::DefaultIsa());
  auto buffer = AllocateHost(bytes);
  std::memset(buffer->data(), 1, bytes);  // touch every page before timing
  const float* data = static_cast<const float*>(buffer->data());
  const int64_t floats = static_cast<int64_t>(bytes / sizeof(float));
  constexpr int64_t kChunk = 1 << 16;  // floats per task
  constexpr int64_t kStep = 256;       // floats per dot call (1 KB)
  std::vector<double> gbps;
  volatile float sink = 0;
  for (int r = 0; r < runs; ++r) {
    std::vector<float> partial((floats + kChunk - 1) / kChunk);
    const auto start = std::chrono::steady_clock::now();
    pool.ParallelFor(static_cast<int64_t>(partial.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        const int64_t n = std::min(kChunk, floats - c * kChunk);
        const float* x = data + c * kChunk;
        float sum = 0.0f;
        // 1 KB steps, prefetching 2 KB ahead as the weight kernels do; dot(x, x) streams x
        // once (both operands share cache lines).
        for (int64_t off = 0; off < n; off += kStep) {
          const char* ahead = reinterpret_cast<const char*>(x + off) + 2048;
          for (int line = 0; line < 16; ++line) __builtin_prefetch(ahead + 64 * line);
          sum += prims.dot(x + off, x + off, std::min(kStep, n - off));
        }
        partial[c] = sum;
      }
    });
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sink = sink + partial[0];
    gbps.push_back(bytes / s / 1e9);
  }
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

}  // namespace dserve::cli
