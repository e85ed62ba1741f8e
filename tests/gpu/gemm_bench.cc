// The FP8 GEMM benchmark of tests/gpu/run.sh: cuBLASLt's block-scaled FP8 GEMM at DeepSeek-V3's
// projection shapes (N x K = 24576x1536 q_b, 32768x512 kv_b, 7168x16384 o_proj, 4096x7168
// experts' gate+up (TP), 7168x2048 expert down, 2112x7168 q_a + kv_a) for M = 64, 128, 4096
// tokens, against the GPU's measured dense peaks (the largest FP8 and BF16 GEMMs, one scale
// per tensor). Medians of timed repetitions with CUDA events; prints a table.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/cuda/blas_lt.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/fp8_quant.h"

namespace dserve::kernels::cuda {
namespace {

struct Buffers {
  Tensor x, w, x_scales, w_scales, out;
};

// Random finite values (uniform data runs measurably faster on tensor cores): E4M3 bytes
// with the exponent's top bit cleared (no NaN codes), BF16 with |value| < 2.
absl::StatusOr<Tensor> RandomDevice(int64_t elements, DType dtype, std::mt19937& rng) {
  const int64_t bytes = elements * DTypeSize(dtype);
  std::vector<uint8_t> host(bytes);
  for (uint8_t& b : host) b = static_cast<uint8_t>(rng());
  for (int64_t i = 0; i < bytes; ++i) {
    if (dtype == DType::kF8E4M3) host[i] &= 0xF7;
    if (dtype == DType::kBF16 && i % 2 == 1) host[i] &= 0xBF;  // the high byte
  }
  DSERVE_ASSIGN_OR_RETURN(Tensor t, DeviceTensor(DType::kU8, {bytes}));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(t.raw(), host.data(), bytes));
  return t;
}

absl::StatusOr<Buffers> Allocate(int64_t m, int64_t n, int64_t k, DType in) {
  Buffers b;
  std::mt19937 rng(1);
  DSERVE_ASSIGN_OR_RETURN(b.x, RandomDevice(m * k, in, rng));
  DSERVE_ASSIGN_OR_RETURN(b.w, RandomDevice(n * k, in, rng));
  const int64_t xs = std::max<int64_t>(1, Fp8ScaleStride(m) * (k / 128));
  const int64_t ws = std::max<int64_t>(1, (n + 127) / 128 * (k / 128));
  const std::vector<float> ones(std::max(xs, ws), 1.0f);
  DSERVE_ASSIGN_OR_RETURN(b.x_scales, DeviceTensor(DType::kF32, {xs}));
  DSERVE_ASSIGN_OR_RETURN(b.w_scales, DeviceTensor(DType::kF32, {ws}));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(b.x_scales.raw(), ones.data(), xs * 4));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(b.w_scales.raw(), ones.data(), ws * 4));
  DSERVE_ASSIGN_OR_RETURN(b.out, DeviceTensor(DType::kBF16, {m, n}));
  return b;
}

enum class Kind { kFp8Block, kFp8Tensor, kBf16 };

// Median seconds of one GEMM over `reps` timed runs after 3 warm-ups.
absl::StatusOr<double> Time(BlasLt& blas, Kind kind, int64_t m, int64_t n, int64_t k, int reps) {
  const DType in = kind == Kind::kBf16 ? DType::kBF16 : DType::kF8E4M3;
  DSERVE_ASSIGN_OR_RETURN(Buffers b, Allocate(m, n, k, in));
  GemmParams p{m, n, k, b.x.raw(), b.w.raw(), b.x_scales.data<float>(), b.w_scales.data<float>(),
               b.out.raw()};
  auto run = [&]() -> absl::Status {
    switch (kind) {
      case Kind::kFp8Block: return blas.Fp8BlockScaled(p, nullptr);
      case Kind::kFp8Tensor: return blas.Fp8TensorScaled(p, nullptr);
      case Kind::kBf16: return blas.Bf16(p, nullptr);
    }
    return absl::OkStatus();
  };
  for (int i = 0; i < 3; ++i) DSERVE_RETURN_IF_ERROR(run());
  cudaEvent_t start, stop;
  DSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  DSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  std::vector<double> seconds;
  for (int i = 0; i < reps; ++i) {
    DSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, nullptr));
    DSERVE_RETURN_IF_ERROR(run());
    DSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, nullptr));
    DSERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0;
    DSERVE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    seconds.push_back(ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

double Tflops(int64_t m, int64_t n, int64_t k, double s) { return 2.0 * m * n * k / s / 1e12; }

absl::Status Run() {
  DSERVE_RETURN_IF_ERROR(DeviceAvailable());
  DSERVE_ASSIGN_OR_RETURN(DeviceInfo info, GetDeviceInfo(0));
  std::printf("device: %s, sm_%d%d, %d SMs, %.1f GiB\n", info.name.c_str(), info.compute_major,
              info.compute_minor, info.multiprocessors, info.total_bytes / double(1 << 30));
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<BlasLt> blas, BlasLt::Create());
  const int64_t big = 8192;
  DSERVE_ASSIGN_OR_RETURN(const double fp8_s, Time(*blas, Kind::kFp8Tensor, big, big, big, 10));
  DSERVE_ASSIGN_OR_RETURN(const double bf16_s, Time(*blas, Kind::kBf16, big, big, big, 10));
  const double fp8_peak = Tflops(big, big, big, fp8_s), bf16_peak = Tflops(big, big, big, bf16_s);
  std::printf("measured dense peak (8192^3 on random data, one scale per tensor, no fast "
              "accumulation): FP8 %.0f TFLOPS, BF16 %.0f TFLOPS\n",
              fp8_peak, bf16_peak);
  struct Row {
    int64_t m, n, k;
    double s;
  };
  std::vector<Row> rows;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {24576, 1536}, {32768, 512}, {7168, 16384}, {4096, 7168}, {7168, 2048}, {2112, 7168}};
  for (const auto& [n, k] : shapes) {
    for (int64_t m : {64, 128, 4096}) {
      DSERVE_ASSIGN_OR_RETURN(const double s, Time(*blas, Kind::kFp8Block, m, n, k, 20));
      rows.push_back({m, n, k, s});
    }
  }
  std::printf("\nblock-scaled FP8 GEMM (1x128 activation, 128x128 weight scales, BF16 out)\n");
  std::printf("%6s %7s %7s %10s %8s %9s %10s\n", "M", "N", "K", "time us", "TFLOPS",
              "% FP8 pk", "weight GB/s");
  for (const Row& r : rows) {
    const double t = Tflops(r.m, r.n, r.k, r.s);
    std::printf("%6lld %7lld %7lld %10.1f %8.1f %8.1f%% %10.0f\n", static_cast<long long>(r.m),
                static_cast<long long>(r.n), static_cast<long long>(r.k), r.s * 1e6, t,
                100.0 * t / fp8_peak, r.n * r.k / r.s / 1e9);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace dserve::kernels::cuda

int main() {
  const absl::Status s = dserve::kernels::cuda::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "gpu_gemm_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
