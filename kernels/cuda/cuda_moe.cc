// CudaOps' DeepSeekMoE: the gate (router logits in F32, then the routing kernel) and the
// experts. With tensor-core GEMMs and FP8/BF16 experts of multiple-of-128 sizes, every expert
// runs in one grouped GEMM per projection on the device (moe/: dispatch by expert, gate/up with
// SwiGLU fused, down, weighted combine; nothing read back). Otherwise a straightforward path:
// the routed tokens grouped by expert on the host, each expert with tokens running gather,
// gate/up, SwiGLU, down and a weighted add, in expert order as the CPU op adds them.
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/moe/combine.h"
#include "kernels/cuda/moe_route.h"
#include "kernels/cuda/row_moves.h"

namespace dserve::kernels::cuda {

void CudaOps::MoeRoute(const Tensor& x, const Weight& router, const Tensor& bias,
                       const RouterConfig& config, Tensor& ids, Tensor& weights) {
  if (!Begin()) return;
  const int64_t T = x.dim(0);
  const int E = config.num_experts, K = config.top_k;
  CheckF32(x, T, router.cols, "router input");
  DSERVE_CHECK(router.rows == E) << "router shape";
  DSERVE_CHECK(ids.dtype() == DType::kI32 && ids.numel() == T * K) << "ids " << ids.ShapeString();
  DSERVE_CHECK(weights.dtype() == DType::kF32 && weights.numel() == T * K &&
               ids.device() == Device::kCuda && weights.device() == Device::kCuda)
      << "weights " << weights.ShapeString();
  DSERVE_CHECK(bias.empty() || (bias.numel() == E && bias.device() == Device::kCuda))
      << "bias " << bias.ShapeString();
  if (T == 0) return;
  // Routing decisions are discrete: the logits come from the exact kernel (F32, like the
  // CPU's), never from the FP8 tensor-core path, so both backends pick the same experts.
  Tensor logits = Empty(DType::kF32, {T, E});
  if (Failed()) return;
  RecordLaunch(LaunchLinear(x.data<float>(), T, ViewOf(router), logits.data<float>(), stream_),
               "router logits");
  if (Failed()) return;
  RecordLaunch(LaunchMoeRoute(logits.data<float>(), bias.empty() ? nullptr : bias.data<float>(),
                              config, T, ids.data<int32_t>(), weights.data<float>(), stream_),
               "MoeRoute");
}

void CudaOps::CountExperts(const Tensor& ids, Tensor& counts) {
  if (!Begin()) return;
  DSERVE_CHECK(ids.dtype() == DType::kI32 && counts.dtype() == DType::kI32 &&
               ids.device() == Device::kCuda && counts.device() == Device::kCuda)
      << "I32 ids and counts on cuda";
  // A recorded step counts only its live rows (a replay's padding rows route too).
  const int32_t* live = nullptr;
  const int per_row = ids.rank() == 2 ? static_cast<int>(ids.dim(1)) : 1;
  if (capturing_) {
    const int32_t rows = static_cast<int32_t>(ids.numel() / per_row);
    live = static_cast<const int32_t*>(Stage(live_rows_, &rows, sizeof(rows)));
    if (Failed()) return;
  }
  RecordLaunch(LaunchCountExperts(ids.data<int32_t>(), ids.numel(),
                                  static_cast<int>(counts.numel()), counts.data<uint32_t>(), live,
                                  per_row, stream_),
               "CountExperts");
}

const MoeExpertWeights* CudaOps::GroupedExperts(std::span<const MlpWeights> experts,
                                                const MlpWeights* shared) {
  // Eligible: every expert FP8 with 128x128 blocks, or every one BF16; sizes of whole blocks;
  // data on the device, 16-byte aligned (the kernels' asynchronous copies), FP8 with scales.
  // A shared expert joins as expert E: it must look like the routed ones.
  const DType dtype = experts[0].gate.dtype;
  const int64_t H = experts[0].gate.cols, I = experts[0].gate.rows;
  std::vector<const MlpWeights*> list;
  for (const MlpWeights& m : experts) list.push_back(&m);
  if (shared) list.push_back(shared);
  bool ok = (dtype == DType::kF8E4M3 || dtype == DType::kBF16) && H % 128 == 0 && I % 128 == 0 &&
            list.size() <= static_cast<size_t>(kMoeMaxExperts);
  std::vector<MoeExpertWeights> table;
  for (const MlpWeights* e : list) {
    const MlpWeights& m = *e;
    for (const Weight* w : {&m.gate, &m.up, &m.down}) {
      ok = ok && w->dtype == dtype && w->data != nullptr &&
           reinterpret_cast<uintptr_t>(w->data) % 16 == 0 &&
           (dtype != DType::kF8E4M3 ||
            (w->block_rows == 128 && w->block_cols == 128 && w->scale_inv != nullptr));
    }
    ok = ok && m.gate.rows == I && m.up.rows == I && m.gate.cols == H && m.up.cols == H &&
         m.down.rows == H && m.down.cols == I;
    table.push_back({m.gate.data, m.up.data, m.down.data, m.gate.scale_inv, m.up.scale_inv,
                     m.down.scale_inv});
  }
  // Reused while the list holds the same weights (every step of a loaded model); a list at a
  // reused address with other weights gets a new table.
  ExpertTable& cached = expert_tables_[{experts.data(), shared}];
  if (cached.host.size() == table.size() && cached.eligible == ok &&
      std::memcmp(cached.host.data(), table.data(), table.size() * sizeof(table[0])) == 0) {
    return cached.device.empty() ? nullptr : cached.device.data<MoeExpertWeights>();
  }
  if (capturing_) {  // uploading a table would wait on the GPU inside the recording
    Record(absl::FailedPreconditionError(
        "a step graph cannot record a MoE layer whose expert table is not built yet (run an "
        "eager step first)"));
    return nullptr;
  }
  cached = ExpertTable();
  if (!ok) {
    cached.host = std::move(table);
    return nullptr;
  }
  Tensor host(AllocateHost(table.size() * sizeof(MoeExpertWeights)), DType::kU8,
              {static_cast<int64_t>(table.size() * sizeof(MoeExpertWeights))});
  std::memcpy(host.raw(), table.data(), host.bytes());
  const absl::Status placed = PlaceTensor(host);
  if (!placed.ok()) {
    Record(placed);
    return nullptr;
  }
  cached.host = std::move(table);
  cached.eligible = true;
  cached.device = std::move(host);
  return cached.device.data<MoeExpertWeights>();
}

namespace {

void CheckMoeInputs(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& ids,
                    const Tensor& weights, const Tensor& out) {
  const int64_t T = x.dim(0), H = x.dim(1);
  const int64_t K = T > 0 ? ids.numel() / T : 0;
  DSERVE_CHECK(x.dtype() == DType::kF32 && out.dtype() == DType::kF32 && out.dim(0) == T &&
               out.dim(1) == H && x.device() == Device::kCuda && out.device() == Device::kCuda)
      << "moe input " << x.ShapeString() << ", output " << out.ShapeString();
  DSERVE_CHECK(!experts.empty() && experts[0].gate.cols == H)
      << "experts for inputs of width " << H;
  DSERVE_CHECK(ids.dtype() == DType::kI32 && weights.dtype() == DType::kF32 &&
               ids.numel() == T * K && weights.numel() == T * K &&
               ids.device() == Device::kCuda && weights.device() == Device::kCuda)
      << "ids/weights per token: " << ids.ShapeString() << ", " << weights.ShapeString();
}

}  // namespace

bool CudaOps::GroupedMoe(const Tensor& x, std::span<const MlpWeights> experts,
                         const MlpWeights* shared, const Tensor& ids, const Tensor& weights,
                         Tensor& out) {
  const int64_t T = x.dim(0), H = x.dim(1);
  const int64_t K = T > 0 ? ids.numel() / T : 0;
  const int64_t routed = static_cast<int64_t>(experts.size());
  const int64_t k_all = K + (shared ? 1 : 0);
  if (options_.gemm != GemmMode::kTensorCores || !options_.grouped_moe || K < 1 ||
      k_all > kMoeMaxTopK) {
    return false;
  }
  const MoeExpertWeights* table = GroupedExperts(experts, shared);
  if (table == nullptr) return false;
  // The shared expert as expert E, chosen by every token with weight 1 after its routed ones:
  // the combine's last fused multiply-add by 1 is the model's separate add.
  const int32_t* all_ids = ids.data<int32_t>();
  const float* all_weights = weights.data<float>();
  Tensor shared_ids, shared_weights;
  if (shared) {
    shared_ids = Empty(DType::kI32, {T, k_all});
    shared_weights = Empty(DType::kF32, {T, k_all});
    if (Failed()) return true;
    RecordLaunch(LaunchAppendExpert(ids.data<int32_t>(), weights.data<float>(), T,
                                    static_cast<int32_t>(K), static_cast<int32_t>(routed), 1.0f,
                                    shared_ids.data<int32_t>(), shared_weights.data<float>(),
                                    stream_),
                 "MoE shared expert ids");
    all_ids = shared_ids.data<int32_t>();
    all_weights = shared_weights.data<float>();
  }
  // The workspace grows with the tokens (about 0.25 MB each at V3's sizes): long prefill
  // chunks go in pieces.
  constexpr int64_t kTokensPerCall = 1024;
  for (int64_t t0 = 0; t0 < T && !Failed(); t0 += kTokensPerCall) {
    const int64_t n = std::min(kTokensPerCall, T - t0);
    MoeExpertsParams p;
    p.x = x.data<float>() + t0 * H;
    p.ids = all_ids + t0 * k_all;
    p.weights = all_weights + t0 * k_all;
    p.out = out.data<float>() + t0 * H;
    p.tokens = n;
    p.hidden = H;
    p.inter = experts[0].gate.rows;
    p.top_k = static_cast<int32_t>(k_all);
    p.num_experts = static_cast<int32_t>(routed + (shared ? 1 : 0));
    p.weight_type = experts[0].gate.dtype == DType::kF8E4M3 ? MoeWeightType::kFp8E4M3
                                                            : MoeWeightType::kBF16;
    p.experts = table;
    p.workspace_bytes = MoeExpertsWorkspaceBytes(p);
    Tensor workspace = Empty(DType::kU8, {static_cast<int64_t>(p.workspace_bytes)});
    if (Failed()) return true;
    p.workspace = workspace.raw();
    RecordLaunch(LaunchMoeExperts(p, stream_), "MoeExperts (grouped)");
  }
  return true;
}

bool CudaOps::MoeExpertsWithShared(const Tensor& x, std::span<const MlpWeights> experts,
                                   const MlpWeights* shared, const Tensor& ids,
                                   const Tensor& weights, Tensor& out) {
  if (!Begin()) return shared != nullptr;  // nothing runs after an error either way
  CheckMoeInputs(x, experts, ids, weights, out);
  if (x.dim(0) == 0) return shared != nullptr;
  if (shared && GroupedMoe(x, experts, shared, ids, weights, out)) return true;
  if (Failed()) return true;
  MoeExperts(x, experts, ids, weights, out);
  return false;
}

void CudaOps::MoeExperts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& ids,
                         const Tensor& weights, Tensor& out) {
  if (!Begin()) return;
  const int64_t T = x.dim(0), H = x.dim(1);
  const int64_t K = T > 0 ? ids.numel() / T : 0;
  const int E = static_cast<int>(experts.size());
  CheckMoeInputs(x, experts, ids, weights, out);
  if (T == 0) return;
  // The grouped kernels drop an expert id outside [0, E) (the per-expert path below reports
  // it) and sum a repeated one; the router produces neither.
  if (GroupedMoe(x, experts, nullptr, ids, weights, out) || Failed()) return;
  if (capturing_) {
    Record(absl::FailedPreconditionError(
        "a step graph cannot record the per-expert MoE path (it reads the routing back to the "
        "host): graphs need --cuda-gemm tensor-cores and FP8 (128x128 blocks) or BF16 experts "
        "whose sizes are multiples of 128"));
    return;
  }
  RecordLaunch(cudaMemsetAsync(out.raw(), 0, out.bytes(), stream_), "cudaMemsetAsync");
  // The routing is read back once (a few bytes per token) to group tokens by expert.
  std::vector<int32_t> host_ids(T * K);
  std::vector<float> host_weights(T * K);
  CopyToHost(ids, host_ids.data());
  CopyToHost(weights, host_weights.data());
  if (Failed()) return;
  std::vector<int32_t> count(E + 1, 0);
  for (int32_t e : host_ids) {
    if (e < 0 || e >= E) {
      Record(absl::InternalError(absl::StrCat("the router chose expert ", e, " of ", E)));
      return;
    }
    ++count[e + 1];
  }
  for (int e = 0; e < E; ++e) count[e + 1] += count[e];  // now each expert's first entry
  // Token rows and weights sorted by expert, tokens ascending within one.
  std::vector<int32_t> tokens(T * K);
  std::vector<float> scales(T * K);
  std::vector<int32_t> next(count.begin(), count.end() - 1);
  int64_t most = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) {
      const int32_t slot = next[host_ids[t * K + k]]++;
      tokens[slot] = static_cast<int32_t>(t);
      scales[slot] = host_weights[t * K + k];
    }
  }
  for (int e = 0; e < E; ++e) most = std::max<int64_t>(most, count[e + 1] - count[e]);
  // One expert's rows are added without atomics, so a token may name an expert once (as
  // every router does); its tokens are ascending, so a repeat is adjacent.
  for (int e = 0; e < E; ++e) {
    for (int32_t i = count[e] + 1; i < count[e + 1]; ++i) {
      if (tokens[i] == tokens[i - 1]) {
        Record(absl::InvalidArgumentError(
            absl::StrCat("token ", tokens[i], " is routed to expert ", e, " twice")));
        return;
      }
    }
  }
  const int32_t* d_tokens =
      static_cast<const int32_t*>(Stage(moe_rows_, tokens.data(), tokens.size() * 4));
  const float* d_scales =
      static_cast<const float*>(Stage(moe_scales_, scales.data(), scales.size() * 4));
  const int64_t I = experts[0].gate.rows;
  Tensor xs = Empty(DType::kF32, {most, H});
  Tensor gate = Empty(DType::kF32, {most, I});
  Tensor up = Empty(DType::kF32, {most, I});
  Tensor ys = Empty(DType::kF32, {most, H});
  for (int e = 0; e < E && !Failed(); ++e) {
    const int64_t n = count[e + 1] - count[e];
    if (n == 0) continue;
    const MlpWeights& m = experts[e];
    DSERVE_CHECK(m.gate.rows == I && m.up.rows == I && m.gate.cols == H && m.down.rows == H &&
                 m.down.cols == I)
        << "expert " << e << " shapes";
    RecordLaunch(LaunchGatherRows(x.data<float>(), H, d_tokens + count[e], n, xs.data<float>(),
                                  stream_),
                 "gathering an expert's tokens");
    LinearInto(xs.data<float>(), n, m.gate, gate.data<float>());
    LinearInto(xs.data<float>(), n, m.up, up.data<float>());
    if (Failed()) return;
    RecordLaunch(LaunchSiluMul(gate.data<float>(), up.data<float>(), n * I, gate.data<float>(),
                               stream_),
                 "SiluMul");
    LinearInto(gate.data<float>(), n, m.down, ys.data<float>());
    if (Failed()) return;
    RecordLaunch(LaunchScatterAddScaled(ys.data<float>(), H, d_tokens + count[e],
                                        d_scales + count[e], n, out.data<float>(), stream_),
                 "adding an expert's outputs");
  }
}

}  // namespace dserve::kernels::cuda
