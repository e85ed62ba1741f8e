// The MLA decode benchmark of tests/gpu/run.sh: kernels/cuda/mla/decode.h at FlashMLA's shapes
// (batch 128, contexts 4096 and 8192, h_q 16 and 128, s_q 1 and 2, BF16 and FP8 caches, 64-token
// pages over shuffled pages) on random data, against a measured device-to-device copy. Per
// config: the median of 10 timed runs (CUDA events) after warm-up, the bytes it must move (every
// key's cache bytes, q_cat and o_lat), GB/s and its share of the copy's, TFLOPS, and the time of
// s_q = 2 over s_q = 1. Prints a table.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "core/dtype.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/mla/decode.h"
#include "kernels/latent_cache.h"
#include "tests/gpu/bench_timing.h"

namespace dserve::kernels::cuda {
namespace {

constexpr int64_t kBatch = 128;
constexpr int64_t kKvLora = 512;
constexpr int64_t kRope = 64;
constexpr int64_t kPage = 64;
constexpr int64_t kMaxContext = 8192;
constexpr int64_t kMaxRows = kBatch * 2;  // s_q up to 2
constexpr int64_t kMaxHeads = 128;
constexpr int kWarmup = 3;
constexpr int kReps = 10;

// A cache of kBatch * kMaxContext tokens of one layer in `format`: a block of random tokens
// (latents about RMS-normalised, FP8 encoded as the cache write does) repeated over the pages.
absl::StatusOr<Tensor> RandomCache(LatentFormat format, std::mt19937& rng) {
  const DType dtype = format == LatentFormat::kFp8 ? DType::kF8E4M3 : DType::kBF16;
  constexpr int64_t kPatternTokens = 8192;
  LatentCache pattern(LatentCacheShape{1, kKvLora, kRope, kPage, kPatternTokens / kPage, dtype});
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> token(kKvLora + kRope);
  const std::vector<int32_t> table = [] {
    std::vector<int32_t> t(kPatternTokens / kPage);
    std::iota(t.begin(), t.end(), 0);
    return t;
  }();
  for (int64_t i = 0; i < kPatternTokens; ++i) {
    for (float& x : token) x = normal(rng);
    pattern.WriteToken(0, table, i, token.data());
  }
  const size_t pattern_bytes = pattern.storage().bytes();
  const size_t total = pattern_bytes * (kBatch * kMaxContext / kPatternTokens);
  DSERVE_ASSIGN_OR_RETURN(Tensor cache, DeviceTensor(DType::kU8, {static_cast<int64_t>(total)}));
  uint8_t* dst = static_cast<uint8_t*>(cache.raw());
  DSERVE_RETURN_IF_ERROR(CopyToDevice(dst, pattern.storage().raw(), pattern_bytes));
  for (size_t done = pattern_bytes; done < total;) {
    const size_t n = std::min(done, total - done);  // doubling copies
    DSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst + done, dst, n, cudaMemcpyDeviceToDevice));
    done += n;
  }
  return cache;
}

struct Result {
  LatentFormat format;
  int64_t context, heads;
  int32_t s_q;
  double seconds, bytes, flops;
};

const char* FormatName(LatentFormat f) { return f == LatentFormat::kFp8 ? "FP8" : "BF16"; }

absl::Status Run() {
  DSERVE_RETURN_IF_ERROR(DeviceAvailable());
  DSERVE_ASSIGN_OR_RETURN(DeviceInfo info, GetDeviceInfo(0));
  std::printf("device: %s, sm_%d%d, %d SMs, %.1f GiB\n", info.name.c_str(), info.compute_major,
              info.compute_minor, info.multiprocessors, info.total_bytes / double(1 << 30));
  DSERVE_ASSIGN_OR_RETURN(const double copy_bw, CopyBandwidth());
  std::printf("device-to-device cudaMemcpy of 1 GiB: %.0f GB/s (read + write)\n", copy_bw / 1e9);

  std::mt19937 rng(1);
  // Block tables: each sequence owns kMaxContext / kPage pages, shuffled over the cache; a
  // shorter context uses the first pages of its table.
  const int64_t pages_per_seq = kMaxContext / kPage;
  std::vector<int32_t> tables(kBatch * pages_per_seq);
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), rng);
  DSERVE_ASSIGN_OR_RETURN(Tensor d_tables, DeviceTensor(DType::kI32, {kBatch * pages_per_seq}));
  DSERVE_RETURN_IF_ERROR(
      CopyToDevice(d_tables.raw(), tables.data(), tables.size() * sizeof(int32_t)));

  const int64_t dim = kKvLora + kRope;
  std::vector<float> q(kMaxRows * kMaxHeads * dim);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (float& x : q) x = normal(rng);
  DSERVE_ASSIGN_OR_RETURN(Tensor d_q, DeviceTensor(DType::kF32, {kMaxRows * kMaxHeads * dim}));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(d_q.raw(), q.data(), q.size() * sizeof(float)));
  DSERVE_ASSIGN_OR_RETURN(Tensor d_out,
                          DeviceTensor(DType::kF32, {kMaxRows * kMaxHeads * kKvLora}));

  std::vector<Result> results;
  for (const LatentFormat format : {LatentFormat::kBF16, LatentFormat::kFp8}) {
    DSERVE_ASSIGN_OR_RETURN(Tensor cache, RandomCache(format, rng));
    const int64_t token_bytes = LatentTokenBytes(format, kKvLora, kRope);
    for (const int64_t context : {4096, 8192}) {
      for (const int64_t heads : {16, 128}) {
        for (const int32_t s_q : {1, 2}) {
          std::vector<MlaDecodeSequence> seqs;
          for (int64_t i = 0; i < kBatch; ++i) {
            seqs.push_back({static_cast<int32_t>(i * s_q), s_q, static_cast<int32_t>(context),
                            static_cast<int32_t>(i * pages_per_seq)});
          }
          MlaDecodePlan plan;
          DSERVE_CUDA_RETURN_IF_ERROR(PlanMlaDecode(seqs.data(), seqs.size(), heads,
                                                    info.multiprocessors, &plan));
          const int64_t plan_ints = std::max<int64_t>(1, plan.data.size());
          DSERVE_ASSIGN_OR_RETURN(Tensor d_plan, DeviceTensor(DType::kI32, {plan_ints}));
          DSERVE_CUDA_RETURN_IF_ERROR(UploadMlaDecodePlan(plan, d_plan.data<int32_t>(), nullptr));
          const size_t workspace_bytes = MlaDecodeWorkspaceBytes(plan.schedule, kKvLora);
          const int64_t workspace_size = std::max<int64_t>(16, workspace_bytes);
          DSERVE_ASSIGN_OR_RETURN(Tensor workspace, DeviceTensor(DType::kU8, {workspace_size}));

          MlaDecodeParams p;
          p.q_cat = d_q.data<float>();
          p.o_lat = d_out.data<float>();
          p.rows = kBatch * s_q;
          p.heads = heads;
          p.kv_lora = kKvLora;
          p.rope_dim = kRope;
          p.cache = cache.raw();
          p.format = format;
          p.page_size = kPage;
          p.token_bytes = token_bytes;
          p.block_tables = d_tables.data<int32_t>();
          p.schedule = plan.schedule;
          p.plan_data = d_plan.data<int32_t>();
          p.workspace = workspace.raw();
          p.workspace_bytes = workspace_bytes;
          auto decode = [&]() -> absl::Status {
            DSERVE_CUDA_RETURN_IF_ERROR(LaunchMlaDecode(p, nullptr));
            return absl::OkStatus();
          };
          DSERVE_ASSIGN_OR_RETURN(const double s, MedianSeconds(decode, nullptr, kWarmup, kReps));
          // A sanity check, not a test (mla_decode_test is): the first sequence's outputs exist.
          std::vector<float> first(static_cast<size_t>(s_q * heads * kKvLora));
          DSERVE_RETURN_IF_ERROR(
              CopyToHost(first.data(), d_out.raw(), first.size() * sizeof(float)));
          if (!std::all_of(first.begin(), first.end(), [](float x) { return std::isfinite(x); })) {
            return absl::InternalError("non-finite outputs");
          }
          const double rows = static_cast<double>(kBatch) * s_q * heads;
          const double bytes = static_cast<double>(kBatch) * context * token_bytes +
                               rows * dim * sizeof(float) + rows * kKvLora * sizeof(float);
          const double flops = 2.0 * rows * context * (dim + kKvLora);
          results.push_back({format, context, heads, s_q, s, bytes, flops});
        }
      }
    }
  }

  std::printf("\nMLA decode (absorbed, tensor cores, split-KV): batch %lld, kv_lora %lld + rope "
              "%lld, %lld-token pages, median of %d\n",
              static_cast<long long>(kBatch), static_cast<long long>(kKvLora),
              static_cast<long long>(kRope), static_cast<long long>(kPage), kReps);
  std::printf("%-5s %6s %4s %4s %10s %9s %8s %8s %8s %9s\n", "cache", "ctx", "h_q", "s_q",
              "time us", "MB moved", "GB/s", "% copy", "TFLOPS", "sq2/sq1");
  for (const Result& r : results) {
    std::string ratio = "";
    if (r.s_q == 2) {
      for (const Result& o : results) {
        if (o.s_q == 1 && o.format == r.format && o.context == r.context && o.heads == r.heads) {
          char buffer[32];
          std::snprintf(buffer, sizeof(buffer), "%.2f", r.seconds / o.seconds);
          ratio = buffer;
        }
      }
    }
    std::printf("%-5s %6lld %4lld %4d %10.1f %9.1f %8.0f %7.1f%% %8.1f %9s\n",
                FormatName(r.format), static_cast<long long>(r.context),
                static_cast<long long>(r.heads), r.s_q, r.seconds * 1e6, r.bytes / 1e6,
                r.bytes / r.seconds / 1e9, 100.0 * r.bytes / r.seconds / copy_bw,
                r.flops / r.seconds / 1e12, ratio.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace dserve::kernels::cuda

int main() {
  const absl::Status s = dserve::kernels::cuda::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "gpu_mla_decode_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
