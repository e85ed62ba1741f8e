// The MoE benchmark of tests/gpu/run.sh: one DeepSeek-V3 MoE layer's routed experts (256 experts
// of 2048 x 7168, FP8 with 128x128 block scales, top 8, uniform random routing) through
// LaunchMoeExperts (kernels/cuda/moe/) for 1 to 4096 tokens, against a measured device-to-device
// copy. Per batch: the median of 10 timed runs (CUDA events) after warm-up, the weight bytes it
// must read (experts with at least one token), GB/s and its share of the copy's, TFLOPS, the
// two grouped GEMMs alone, and the per-expert CudaOps::MoeExperts path (tensor-core mode) with
// how closely the two agree. Prints a table.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/dtype.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/moe/combine.h"
#include "kernels/cuda/moe/dispatch.h"
#include "kernels/cuda/moe/grouped_gemm.h"
#include "kernels/ops.h"
#include "tests/gpu/bench_timing.h"

namespace dserve::kernels::cuda {
namespace {

constexpr int64_t kHidden = 7168;
constexpr int64_t kInter = 2048;
constexpr int kExperts = 256;
constexpr int kTopK = 8;
constexpr int64_t kMaxTokens = 4096;
constexpr int64_t kBatches[] = {1, 16, 64, 256, 4096};
constexpr int kWarmup = 3;
constexpr int kReps = 10;
constexpr int64_t kMatrixBytes = kInter * kHidden;  // one FP8 projection
constexpr int64_t kMatrixScales = (kInter / 128) * (kHidden / 128);

// Fills `bytes` of device memory from a random host block of `pattern` bytes, doubling copies.
absl::Status FillFromPattern(uint8_t* dst, size_t bytes, const std::vector<uint8_t>& pattern) {
  const size_t first = std::min(bytes, pattern.size());
  DSERVE_RETURN_IF_ERROR(CopyToDevice(dst, pattern.data(), first));
  for (size_t done = first; done < bytes;) {
    const size_t n = std::min(done, bytes - done);
    DSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst + done, dst, n, cudaMemcpyDeviceToDevice));
    done += n;
  }
  return absl::OkStatus();
}

// 256 experts' gate, up and down weights: random E4M3 codes (normal * 48, most of E4M3's range,
// never NaN) and block scales bringing each matrix to about 1 / sqrt(fan-in), one allocation
// for the codes and one for the scales; the kernels' table and CudaOps' MlpWeights over them.
struct ExpertSet {
  Tensor codes, scales, table;
  std::vector<MlpWeights> mlp;
};

absl::StatusOr<ExpertSet> RandomExperts(std::mt19937& rng) {
  ExpertSet set;
  const int64_t matrices = 3 * int64_t{kExperts};
  DSERVE_ASSIGN_OR_RETURN(set.codes, DeviceTensor(DType::kU8, {matrices * kMatrixBytes}));
  DSERVE_ASSIGN_OR_RETURN(set.scales, DeviceTensor(DType::kF32, {matrices * kMatrixScales}));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> table(4096);
  for (uint8_t& b : table) b = FloatToFp8E4M3(normal(rng) * 48.0f);
  std::vector<uint8_t> pattern(size_t{64} << 20);
  uint32_t state = 0x9E3779B9u;
  for (uint8_t& b : pattern) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    b = table[state & 4095];
  }
  uint8_t* codes = static_cast<uint8_t*>(set.codes.raw());
  DSERVE_RETURN_IF_ERROR(FillFromPattern(codes, set.codes.bytes(), pattern));

  std::uniform_real_distribution<float> octaves(-1.0f, 1.0f);
  std::vector<float> scales(matrices * kMatrixScales);
  for (int64_t m = 0; m < matrices; ++m) {
    const float fan_in = m % 3 == 2 ? kInter : kHidden;
    for (int64_t i = 0; i < kMatrixScales; ++i) {
      scales[m * kMatrixScales + i] = std::exp2(octaves(rng)) / (std::sqrt(fan_in) * 48.0f);
    }
  }
  DSERVE_RETURN_IF_ERROR(CopyToDevice(set.scales.raw(), scales.data(), set.scales.bytes()));

  std::vector<MoeExpertWeights> views(kExperts);
  const float* scale_base = set.scales.data<float>();
  auto weight = [](const uint8_t* data, const float* scale, int64_t rows, int64_t cols) {
    Weight w;
    w.dtype = DType::kF8E4M3;
    w.rows = rows;
    w.cols = cols;
    w.data = data;
    w.scale_inv = scale;
    return w;
  };
  for (int e = 0; e < kExperts; ++e) {
    const uint8_t* m = codes + 3 * e * kMatrixBytes;
    const float* s = scale_base + 3 * e * kMatrixScales;
    views[e] = MoeExpertWeights{m, m + kMatrixBytes,  m + 2 * kMatrixBytes,
                                s, s + kMatrixScales, s + 2 * kMatrixScales};
    set.mlp.push_back(MlpWeights{
        weight(m, s, kInter, kHidden), weight(m + kMatrixBytes, s + kMatrixScales, kInter, kHidden),
        weight(m + 2 * kMatrixBytes, s + 2 * kMatrixScales, kHidden, kInter)});
  }
  DSERVE_ASSIGN_OR_RETURN(
      set.table, DeviceTensor(DType::kU8, {static_cast<int64_t>(sizeof(views[0])) * kExperts}));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(set.table.raw(), views.data(), set.table.bytes()));
  return set;
}

struct Result {
  int64_t tokens = 0;
  int experts_hit = 0;
  double seconds = 0, gate_up = 0, down = 0, old_path = 0;
  double weight_bytes = 0, flops = 0;
  double rel = 0, cosine = 0;  // this path against the old one
};

absl::Status Run() {
  DSERVE_RETURN_IF_ERROR(DeviceAvailable());
  DSERVE_ASSIGN_OR_RETURN(DeviceInfo info, GetDeviceInfo(0));
  std::printf("device: %s, sm_%d%d, %d SMs, %.1f GiB\n", info.name.c_str(), info.compute_major,
              info.compute_minor, info.multiprocessors, info.total_bytes / double(1 << 30));
  DSERVE_ASSIGN_OR_RETURN(const double copy_bw, CopyBandwidth());
  std::printf("device-to-device cudaMemcpy of 1 GiB: %.0f GB/s (read + write)\n", copy_bw / 1e9);

  std::mt19937 rng(7);
  DSERVE_ASSIGN_OR_RETURN(ExpertSet experts, RandomExperts(rng));
  const MoeExpertWeights* table = static_cast<const MoeExpertWeights*>(experts.table.raw());

  // Inputs for the largest batch; smaller ones use its first rows.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(kMaxTokens * kHidden);
  for (float& v : x) v = normal(rng);
  std::vector<int32_t> ids(kMaxTokens * kTopK);
  std::vector<float> weights(kMaxTokens * kTopK);
  std::uniform_real_distribution<float> weight(0.05f, 0.3f);
  std::vector<int32_t> pool(kExperts);
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t t = 0; t < kMaxTokens; ++t) {
    for (int j = 0; j < kTopK; ++j) {  // a partial shuffle: 8 distinct experts
      std::swap(pool[j], pool[std::uniform_int_distribution<int>(j, kExperts - 1)(rng)]);
      ids[t * kTopK + j] = pool[j];
      weights[t * kTopK + j] = weight(rng);
    }
  }
  DSERVE_ASSIGN_OR_RETURN(Tensor d_x, DeviceTensor(DType::kF32, {kMaxTokens, kHidden}));
  DSERVE_ASSIGN_OR_RETURN(Tensor d_ids, DeviceTensor(DType::kI32, {kMaxTokens, kTopK}));
  DSERVE_ASSIGN_OR_RETURN(Tensor d_w, DeviceTensor(DType::kF32, {kMaxTokens, kTopK}));
  DSERVE_ASSIGN_OR_RETURN(Tensor d_out, DeviceTensor(DType::kF32, {kMaxTokens, kHidden}));
  DSERVE_ASSIGN_OR_RETURN(Tensor d_old, DeviceTensor(DType::kF32, {kMaxTokens, kHidden}));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(d_x.raw(), x.data(), d_x.bytes()));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(d_ids.raw(), ids.data(), d_ids.bytes()));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(d_w.raw(), weights.data(), d_w.bytes()));

  // The current per-expert path, for comparison (it reads the routing back every call).
  CudaOpsOptions options;
  options.gemm = GemmMode::kTensorCores;
  options.grouped_moe = false;  // CudaOps would otherwise take the grouped kernels too
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<CudaOps> ops, CudaOps::Create(options));
  const cudaStream_t stream = ops->stream();

  std::vector<Result> results;
  for (const int64_t T : kBatches) {
    Result r;
    r.tokens = T;
    std::vector<bool> hit(kExperts, false);
    for (int64_t i = 0; i < T * kTopK; ++i) hit[ids[i]] = true;
    r.experts_hit = static_cast<int>(std::count(hit.begin(), hit.end(), true));
    r.weight_bytes =
        static_cast<double>(r.experts_hit) * 3 * (kMatrixBytes + kMatrixScales * sizeof(float));
    r.flops = 2.0 * T * kTopK * 3 * kHidden * kInter;

    MoeExpertsParams p;
    p.x = d_x.data<float>();
    p.ids = d_ids.data<int32_t>();
    p.weights = d_w.data<float>();
    p.out = d_out.data<float>();
    p.tokens = T;
    p.hidden = kHidden;
    p.inter = kInter;
    p.top_k = kTopK;
    p.num_experts = kExperts;
    p.weight_type = MoeWeightType::kFp8E4M3;
    p.experts = table;
    p.workspace_bytes = MoeExpertsWorkspaceBytes(p);
    DSERVE_ASSIGN_OR_RETURN(Tensor workspace,
                            DeviceTensor(DType::kU8, {static_cast<int64_t>(p.workspace_bytes)}));
    p.workspace = workspace.raw();
    auto chain = [&]() -> absl::Status {
      DSERVE_CUDA_RETURN_IF_ERROR(LaunchMoeExperts(p, stream));
      return absl::OkStatus();
    };
    DSERVE_ASSIGN_OR_RETURN(r.seconds, MedianSeconds(chain, stream, kWarmup, kReps));

    // The two grouped GEMMs alone, over the routing and activations the chain left in its
    // workspace (the same layout LaunchMoeExperts carves: dispatch, x in BF16, SwiGLU outputs).
    const MoeDispatchShape shape{T, kTopK, kExperts, MoeExpertsBlockM(p)};
    const MoeDispatchOutputs routing = MoeDispatchViews(workspace.raw(), shape);
    uint8_t* after_dispatch =
        static_cast<uint8_t*>(workspace.raw()) + MoeDispatchWorkspaceBytes(shape);
    const size_t x_bytes = (static_cast<size_t>(T * kHidden) * 2 + 255) / 256 * 256;
    const size_t act_bytes = (static_cast<size_t>(T * kTopK * kInter) * 2 + 255) / 256 * 256;
    MoeGemmParams g;
    g.kind = MoeGemmKind::kGateUp;
    g.weight_type = MoeWeightType::kFp8E4M3;
    g.experts = table;
    g.num_experts = kExperts;
    g.n = kInter;
    g.k = kHidden;
    g.a = reinterpret_cast<const uint16_t*>(after_dispatch);
    g.a_rows = T;
    g.slot_token = routing.slot_token;
    g.out = after_dispatch + x_bytes;
    g.tiles = routing.tiles;
    g.num_tiles = routing.num_tiles;
    g.max_tiles = MoeMaxTiles(shape);
    g.block_m = shape.block_m;
    MoeGemmParams d = g;
    d.kind = MoeGemmKind::kDown;
    d.n = kHidden;
    d.k = kInter;
    d.a = reinterpret_cast<const uint16_t*>(after_dispatch + x_bytes);
    d.a_rows = T * kTopK;
    d.slot_token = nullptr;
    d.out = after_dispatch + x_bytes + act_bytes;
    auto gemm = [&](const MoeGemmParams& params) {
      return [&params, stream]() -> absl::Status {
        DSERVE_CUDA_RETURN_IF_ERROR(LaunchMoeGroupedGemm(params, stream));
        return absl::OkStatus();
      };
    };
    DSERVE_ASSIGN_OR_RETURN(r.gate_up, MedianSeconds(gemm(g), stream, kWarmup, kReps));
    DSERVE_ASSIGN_OR_RETURN(r.down, MedianSeconds(gemm(d), stream, kWarmup, kReps));
    DSERVE_CUDA_RETURN_IF_ERROR(LaunchMoeExperts(p, stream));  // the output again, for the check
    DSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    std::vector<float> got(T * kHidden), old(T * kHidden);
    DSERVE_RETURN_IF_ERROR(CopyToHost(got.data(), d_out.raw(), got.size() * sizeof(float)));

    Tensor x_rows = d_x.Rows(0, T), ids_rows = d_ids.Rows(0, T), w_rows = d_w.Rows(0, T);
    Tensor old_rows = d_old.Rows(0, T);
    auto old_path = [&]() -> absl::Status {
      ops->MoeExperts(x_rows, experts.mlp, ids_rows, w_rows, old_rows);
      return ops->TakeError();
    };
    DSERVE_ASSIGN_OR_RETURN(r.old_path, MedianSeconds(old_path, stream, 1, kReps));
    DSERVE_RETURN_IF_ERROR(CopyToHost(old.data(), d_old.raw(), old.size() * sizeof(float)));
    double dot = 0, gg = 0, oo = 0, max_err = 0, max_ref = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) return absl::InternalError("non-finite MoE output");
      dot += double(got[i]) * old[i];
      gg += double(got[i]) * got[i];
      oo += double(old[i]) * old[i];
      max_err = std::max(max_err, std::fabs(double(got[i]) - old[i]));
      max_ref = std::max(max_ref, std::fabs(double(old[i])));
    }
    r.cosine = dot / std::sqrt(gg * oo);
    r.rel = max_err / max_ref;
    // The old path rounds activations to E4M3 (about 4.5% RMS of an output), this one to BF16:
    // cosine about 0.999. Far less means one of them is wrong at V3's shapes.
    if (!(r.cosine > 0.99)) {
      return absl::InternalError(
          absl::StrCat(T, " tokens: cosine ", r.cosine, " against CudaOps::MoeExperts"));
    }
    results.push_back(r);
  }

  std::printf(
      "\nMoE routed experts, DeepSeek-V3 layer: %d experts of %lld x %lld FP8 (128x128 "
      "scales), top %d, uniform routing, median of %d\n",
      kExperts, static_cast<long long>(kInter), static_cast<long long>(kHidden), kTopK, kReps);
  std::printf("%6s %5s %8s %10s %8s %7s %7s %10s %10s %10s %7s %9s %7s\n", "tokens", "hit", "GB",
              "time us", "GB/s", "% copy", "TFLOPS", "gate/up us", "down us", "old us", "speedup",
              "cos(old)", "rel");
  for (const Result& r : results) {
    std::printf(
        "%6lld %5d %8.2f %10.1f %8.0f %6.1f%% %7.1f %10.1f %10.1f %10.1f %6.1fx %9.6f "
        "%7.4f\n",
        static_cast<long long>(r.tokens), r.experts_hit, r.weight_bytes / 1e9, r.seconds * 1e6,
        r.weight_bytes / r.seconds / 1e9, 100.0 * r.weight_bytes / r.seconds / copy_bw,
        r.flops / r.seconds / 1e12, r.gate_up * 1e6, r.down * 1e6, r.old_path * 1e6,
        r.old_path / r.seconds, r.cosine, r.rel);
  }
  std::printf(
      "(GB: weight bytes read, experts with a token; %% copy: of the copy's read + write "
      "rate; old: CudaOps::MoeExperts, FP8 activations; cos/rel: against it)\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace dserve::kernels::cuda

int main() {
  const absl::Status s = dserve::kernels::cuda::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "gpu_moe_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
