// CpuOps: the always-built backend and the numerical reference inside the project.
// Multi-threaded over a ThreadPool, vectorised through the per-ISA Primitives.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/primitives.h"
#include "kernels/ops.h"

namespace dserve::kernels::cpu {

class CpuOps final : public Ops {
 public:
  // num_threads <= 0: one per hardware thread.
  explicit CpuOps(int num_threads, Isa isa = DefaultIsa());

  std::string_view name() const override { return "cpu"; }
  Isa isa() const { return prims_.isa; }
  int num_threads() const { return pool_.size(); }

  Tensor Empty(DType dtype, std::vector<int64_t> shape) override;
  void Embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) override;
  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                  Tensor& out) override;
  void Linear(const Tensor& x, const Weight& w, Tensor& out) override;
  void PrepareWeight(Weight& w) override;
  void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void Add(Tensor& x, const Tensor& y) override;
  void AddWeightedRows(const Tensor& rows, std::span<const int32_t> targets,
                       std::span<const float> weights, Tensor& out) override;
  void ConcatColumns(const Tensor& a, const Tensor& b, Tensor& out) override;
  void SetZero(Tensor& t) override;
  void GatherRows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) override;
  void CopyToHost(const Tensor& src, void* dst) override;

  void MlaWriteCache(const Tensor& kv_a, const Tensor& kv_norm, float eps, const RopeTable& rope,
                     const AttentionBatch& batch, LatentCache& cache, int layer) override;
  void MlaAttention(const MlaParams& params, const Tensor& q, Tensor& out) override;

  void MoeRoute(const Tensor& x, const Weight& router, const Tensor& bias,
                const RouterConfig& config, Tensor& ids, Tensor& weights) override;
  void CountExperts(const Tensor& ids, Tensor& counts) override;
  void MoeExperts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& ids,
                  const Tensor& weights, Tensor& out) override;

 private:
  // Linear on raw row-major F32 buffers: y[T, w.rows] = x[T, w.cols] * W^T; on the pool, or
  // on the calling thread alone (callers that parallelise at a coarser level).
  void LinearRaw(const float* x, int64_t T, const Weight& w, float* y, bool parallel = true);
  void MlaNaive(const MlaParams& p, const SequenceSlice& seq, const float* q, float* out);
  // Heads [head_begin, head_end) of one slice, single-threaded (MlaAttention spreads slices
  // and heads over the pool).
  void MlaAbsorbed(const MlaParams& p, const SequenceSlice& seq, int64_t head_begin,
                   int64_t head_end, const float* q, float* out);

  ThreadPool pool_;
  const Primitives& prims_;
};

// Loop chunks of at least ~64K multiply-adds keep the pool's hand-off (microseconds) small
// next to the work; loops with less than one chunk of work run inline.
inline int64_t GrainFor(int64_t work_per_item) {
  constexpr int64_t kMinChunkWork = 1 << 16;
  return std::max<int64_t>(1, kMinChunkWork / std::max<int64_t>(1, work_per_item));
}

// SwiGLU's elementwise step, silu(g) * u (shared by SiluMul and the MoE experts).
inline float SiluTimes(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

// RoPE on one head's rope part: pairs (x0, x1), (x2, x3), ... are rotated in place by their
// frequency's angle — DeepSeek's own (interleaved, non-NeoX) layout, which the cache keeps.
// `in` may be `out`.
void ApplyRope(const float* in, float* out, const float* cos, const float* sin, int64_t rope_dim);

// Picks naive or absorbed MLA for one sequence by counting multiply-adds of each form.
MlaMode ChooseMlaMode(const MlaParams& p, const SequenceSlice& seq);

}  // namespace dserve::kernels::cpu
