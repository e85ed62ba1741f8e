// Ops: the operations the DeepSeek network is written in. models/ calls only these; each
// backend (kernels/cpu/, kernels/cuda/) implements them on its own device memory.
// Activations are F32 tensors [rows, features]; weights stay in their stored dtype.
//
// Ops return nothing: a backend that can fail at run time (the GPU: out of memory, a device
// fault) records its first error, skips the work after it, and hands it over in TakeError(),
// which the model calls at the end of every step. Host-side arguments (spans, the batch's
// positions and block tables, RoPE tables) are host memory; tensors and weights are the
// backend's.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/tensor.h"
#include "kernels/latent_cache.h"
#include "kernels/router_config.h"
#include "kernels/weight.h"

namespace dserve::kernels {

// cos/sin of every RoPE frequency at positions [0, num_positions), YaRN's mscale folded in.
struct RopeTable {
  const float* cos = nullptr;  // [num_positions, rope_dim / 2]
  const float* sin = nullptr;
  int64_t num_positions = 0;
  int64_t rope_dim = 0;
};

struct MlaParams {
  const AttentionBatch* batch = nullptr;
  const LatentCache* cache = nullptr;
  int layer = 0;
  const Weight* kv_b = nullptr;  // [heads * (nope + v), kv_lora_rank]
  int num_heads = 0;
  int64_t nope_dim = 0;
  int64_t rope_dim = 0;
  int64_t v_dim = 0;
  const RopeTable* rope = nullptr;
  float softmax_scale = 1.0f;
  MlaMode mode = MlaMode::kAuto;  // overrides each slice's own mode unless kAuto
};

// One routed or shared expert: a SwiGLU MLP.
struct MlpWeights {
  Weight gate;  // [intermediate, hidden]
  Weight up;    // [intermediate, hidden]
  Weight down;  // [hidden, intermediate]
};

// What a step graph reads: the step's token ids, batch and logit rows. A graph is recorded for
// one shape (rows, each sequence's row count, logit rows, the most block-table entries) and
// replayed with any input of that shape.
struct StepGraphInput {
  std::span<const int32_t> tokens;
  const AttentionBatch* batch = nullptr;
  std::span<const int32_t> logit_rows;
  const LatentCache* cache = nullptr;
  int num_heads = 0;  // the model's attention heads (the attention plan depends on them)
  // Rows that are real (the rest pad the step to the graph's shape): only their routing
  // counts towards the expert load. -1: every row.
  int64_t live_rows = -1;
};

// A recorded step (a CUDA graph). Replay refills the graph's inputs from `in` and enqueues the
// recorded work; its outputs land in the tensors the recorded ops wrote, which stay valid
// until the next replay of any graph of the same backend.
class StepGraph {
 public:
  virtual ~StepGraph() = default;
  virtual absl::Status Replay(const StepGraphInput& in) = 0;
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual std::string_view name() const = 0;
  // Where this backend's tensors live.
  virtual Device device() const { return Device::kCpu; }
  // The first error since the last call (and clears it); always OK on the CPU.
  virtual absl::Status TakeError() { return absl::OkStatus(); }

  // Moves a checkpoint weight / a small F32 tensor (norms, biases) into this backend's memory,
  // once at load. The CPU backend uses the mapped checkpoint where it is.
  virtual absl::Status PlaceWeight(Weight& w) {
    (void)w;
    return absl::OkStatus();
  }
  virtual absl::Status PlaceTensor(Tensor& t) {
    (void)t;
    return absl::OkStatus();
  }
  // A zero-filled latent cache on this backend's device.
  virtual absl::StatusOr<LatentCache> NewLatentCache(const LatentCacheShape& shape) {
    return LatentCache(shape);
  }
  // Copies page `src` over page `dst` in every layer (the engine's copy-on-write).
  virtual void CopyCachePage(LatentCache& cache, int32_t src, int32_t dst) {
    cache.CopyPage(src, dst);
  }

  // Step graphs (models/step_graphs.h): BeginStepGraph starts recording the ops called after it
  // for the shape of `in` (their work is recorded, not run), EndStepGraph returns the graph.
  // Activations of a recording come from an arena of at least `arena_bytes` (plus what the
  // backend's own padded plans need), shared by the graphs recorded into it and freed with the
  // last of them. Backends without graphs return Unimplemented.
  virtual absl::Status BeginStepGraph(const StepGraphInput& in, int64_t arena_bytes) {
    (void)in;
    (void)arena_bytes;
    return absl::UnimplementedError(absl::StrCat("the ", std::string(name()), " backend has no step graphs"));
  }
  virtual absl::StatusOr<std::unique_ptr<StepGraph>> EndStepGraph() {
    return absl::UnimplementedError(absl::StrCat("the ", std::string(name()), " backend has no step graphs"));
  }  // Arena bytes a recording of `in` needs beyond its activations (the backend's own
  // buffers, e.g. padded attention plans): the caller sizes the shared arena by the largest.
  virtual absl::StatusOr<int64_t> StepGraphExtraBytes(const StepGraphInput& in) {
    (void)in;
    return int64_t{0};
  }

  // The most bytes of activations (Empty) alive at once since the last ResetActivationPeak
  // (0 where not tracked): sizes the step graphs' arena.
  virtual int64_t ActivationPeakBytes() const { return 0; }
  virtual void ResetActivationPeak() {}

  // New F32/I32 activation tensor on this backend's device.
  virtual Tensor Empty(DType dtype, std::vector<int64_t> shape) = 0;
  // Every byte of t set to zero.
  virtual void SetZero(Tensor& t) = 0;
  // out[i, :] = x[rows[i], :] (F32; rows in host memory).
  virtual void GatherRows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) = 0;
  // Copies a tensor's bytes into host memory once the work producing it is done.
  virtual void CopyToHost(const Tensor& src, void* dst) = 0;

  // out[t, :] = table[ids[t], :] as F32.
  virtual void Embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) = 0;
  // out = x * rsqrt(mean(x^2) + eps) * weight, row by row. out may be x.
  virtual void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // residual += delta, then out = RmsNorm(residual).
  virtual void AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                          Tensor& out) = 0;
  // out[T, N] = x[T, K] * W[N, K]^T.
  virtual void Linear(const Tensor& x, const Weight& w, Tensor& out) = 0;
  // Lets the backend keep a large matrix in a layout it multiplies faster (Weight::packed).
  // Results stay the same for every batch size; they may differ from the unprepared
  // weight's in rounding.
  virtual void PrepareWeight(Weight& w) { (void)w; }
  // out = silu(gate) * up, elementwise. out may be gate.
  virtual void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // x += y.
  virtual void Add(Tensor& x, const Tensor& y) = 0;
  // out[targets[i], :] += weights[i] * rows[i, :] for i ascending (targets and weights in
  // host memory; a target may repeat: its adds happen in that order). Expert parallelism's
  // combine, in the order the MoE op adds (expert by expert).
  virtual void AddWeightedRows(const Tensor& rows, std::span<const int32_t> targets,
                               std::span<const float> weights, Tensor& out) = 0;
  // out[T, A + B] = [a[T, A], b[T, B]].
  virtual void ConcatColumns(const Tensor& a, const Tensor& b, Tensor& out) = 0;

  // Splits kv_a [T, kv_lora + rope] (kv_a_proj_with_mqa's output), normalises the latent with
  // kv_norm, applies RoPE to k_pe and stores both in the cache at each row's slot.
  virtual void MlaWriteCache(const Tensor& kv_a, const Tensor& kv_norm, float eps,
                             const RopeTable& rope, const AttentionBatch& batch,
                             LatentCache& cache, int layer) = 0;
  // q [T, heads * (nope + rope)] (RoPE not yet applied) attends to each sequence's cached
  // tokens (causally for the new ones); out [T, heads * v].
  virtual void MlaAttention(const MlaParams& params, const Tensor& q, Tensor& out) = 0;

  // Gate: router logits x * router^T, scores, top-k. ids [T, k] I32, weights [T, k] F32.
  // bias ([experts] F32, may be empty) only affects which experts are chosen.
  virtual void MoeRoute(const Tensor& x, const Weight& router, const Tensor& bias,
                        const RouterConfig& config, Tensor& ids, Tensor& weights) = 0;
  // counts[e] += how many entries of ids equal e (I32 [experts] on this backend's device,
  // wrapping at 2^32): the router's load for the metrics, without a copy per layer.
  virtual void CountExperts(const Tensor& ids, Tensor& counts) = 0;
  // out = sum over k of weights[t, k] * experts[ids[t, k]](x[t]).
  virtual void MoeExperts(const Tensor& x, std::span<const MlpWeights> experts,
                          const Tensor& ids, const Tensor& weights, Tensor& out) = 0;
  // MoeExperts, plus shared(x) when `shared` is given and the backend runs the shared expert
  // together with the routed ones (then true; false: the caller adds shared(x) itself).
  virtual bool MoeExpertsWithShared(const Tensor& x, std::span<const MlpWeights> experts,
                                    const MlpWeights* shared, const Tensor& ids,
                                    const Tensor& weights, Tensor& out) {
    (void)shared;
    MoeExperts(x, experts, ids, weights, out);
    return false;
  }
};

}  // namespace dserve::kernels
