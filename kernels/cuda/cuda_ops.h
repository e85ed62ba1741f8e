// CudaOps: kernels::Ops on one NVIDIA GPU (Hopper, sm_90a). Owns the stream every op runs on,
// the cuBLASLt handle, the stream-ordered pool activations come from, and device copies of
// the per-step metadata (token ids, positions, block tables, RoPE tables).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <utility>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "absl/status/statusor.h"
#include "core/arena_allocator.h"
#include "kernels/cuda/blas_lt.h"
#include "kernels/cuda/latent_format.h"
#include "kernels/cuda/mla/decode.h"
#include "kernels/cuda/moe/grouped_gemm.h"
#include "kernels/cuda/weight_view.h"
#include "kernels/ops.h"

namespace dserve::kernels::cuda {

class CudaStepGraph;

// How FP8 and BF16 projections multiply.
enum class GemmMode {
  // DeepSeek's inference arithmetic: activations quantised per 1x128 group and the
  // block-scaled FP8 GEMM on the tensor cores through cuBLASLt (BF16 products for BF16
  // weights), where the shape allows it (k a multiple of 512 for FP8, of 8 for BF16; n of 8).
  kTensorCores,
  // Every projection in the straightforward kernel: F32 activations, weights dequantised
  // exactly, F32 accumulation — the CPU backend's arithmetic (tests compare the two tightly).
  kExact,
};

struct CudaOpsOptions {
  int device = 0;
  GemmMode gemm = GemmMode::kTensorCores;
  // With kTensorCores: routed experts as grouped GEMMs (moe/) where they qualify; false keeps
  // the per-expert path (benchmarks compare the two).
  bool grouped_moe = true;
};

class CudaOps final : public Ops {
 public:
  // Fails with the reason when no usable GPU is visible.
  static absl::StatusOr<std::unique_ptr<CudaOps>> Create(const CudaOpsOptions& options = {});
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  std::string_view name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  absl::Status TakeError() override;
  cudaStream_t stream() const { return stream_; }
  const CudaOpsOptions& options() const { return options_; }

  // CUDA graphs (cuda_graphs.cc). A recording reads its metadata (ids, positions, slots, rows,
  // block tables, the attention plan) from a fixed device buffer that Replay refills, and its
  // activations come from the arena. Graphs must be destroyed before this backend.
  absl::Status BeginStepGraph(const StepGraphInput& in, int64_t arena_bytes) override;
  absl::StatusOr<std::unique_ptr<StepGraph>> EndStepGraph() override;
  absl::StatusOr<int64_t> StepGraphExtraBytes(const StepGraphInput& in) override;
  int64_t ActivationPeakBytes() const override { return activations_->peak.load(); }
  void ResetActivationPeak() override { activations_->peak.store(activations_->live.load()); }

  absl::Status PlaceWeight(Weight& w) override;
  absl::Status PlaceTensor(Tensor& t) override;
  absl::StatusOr<LatentCache> NewLatentCache(const LatentCacheShape& shape) override;
  void CopyCachePage(LatentCache& cache, int32_t src, int32_t dst) override;

  Tensor Empty(DType dtype, std::vector<int64_t> shape) override;
  void SetZero(Tensor& t) override;
  void GatherRows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) override;
  void CopyToHost(const Tensor& src, void* dst) override;
  void Embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) override;
  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                  Tensor& out) override;
  void Linear(const Tensor& x, const Weight& w, Tensor& out) override;
  void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void Add(Tensor& x, const Tensor& y) override;
  void AddWeightedRows(const Tensor& rows, std::span<const int32_t> targets,
                       std::span<const float> weights, Tensor& out) override;
  void ConcatColumns(const Tensor& a, const Tensor& b, Tensor& out) override;

  void MlaWriteCache(const Tensor& kv_a, const Tensor& kv_norm, float eps, const RopeTable& rope,
                     const AttentionBatch& batch, LatentCache& cache, int layer) override;
  void MlaAttention(const MlaParams& params, const Tensor& q, Tensor& out) override;

  void MoeRoute(const Tensor& x, const Weight& router, const Tensor& bias,
                const RouterConfig& config, Tensor& ids, Tensor& weights) override;
  void CountExperts(const Tensor& ids, Tensor& counts) override;
  void MoeExperts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& ids,
                  const Tensor& weights, Tensor& out) override;
  // With the grouped kernels, the shared expert is one more expert of every token (weight 1,
  // added last: the order of the model's separate add, but in the grouped kernels' arithmetic,
  // BF16 activations, rather than the FP8-quantised cuBLASLt GEMMs it runs in apart).
  bool MoeExpertsWithShared(const Tensor& x, std::span<const MlpWeights> experts,
                            const MlpWeights* shared, const Tensor& ids, const Tensor& weights,
                            Tensor& out) override;

 private:
  friend class CudaStepGraph;
  CudaOps(const CudaOpsOptions& options, int sms, cudaStream_t stream,
          std::unique_ptr<BlasLt> blas);

  // Keeps the first error; ops after it do nothing until TakeError().
  bool Failed() const { return !error_.ok(); }
  // Programmer errors: a tensor of the wrong dtype, shape or device.
  static void CheckF32(const Tensor& t, int64_t rows, int64_t cols, const char* what);
  // Every op starts here: false after an error; selects the device on the calling thread.
  bool Begin();
  void Record(absl::Status status);
  void RecordLaunch(cudaError_t error, const char* what);
  // A device copy of host bytes for this step's kernels (ids, offsets, tables), in a buffer
  // reused while the bytes are the same as last time (every layer of a step reuses them).
  // While recording a graph, the graph's input buffer holds the bytes instead (they must equal
  // what the graph's input builder made for the recorded step: checked).
  struct Staged {
    explicit Staged(const char* what) : name(what) {}
    const char* name;  // for errors
    std::vector<uint8_t> host;
    Tensor device;
  };
  const void* Stage(Staged& slot, const void* bytes, size_t size);
  const void* StageForGraph(Staged& slot, const void* bytes, size_t size);
  // A recording's activation, from the arena.
  Tensor ArenaEmpty(DType dtype, std::vector<int64_t> shape, size_t bytes);
  // Everything a step graph stages, built on the host from its input (step_metadata.h).
  struct StepInputImage {
    std::vector<int32_t> ids, logit_rows, positions, rows, tables, live_rows;
    std::vector<int64_t> offsets;
    MlaDecodePlan plans[2];
  };
  absl::Status BuildStepInputs(const StepGraphInput& in, StepInputImage* image) const;
  // The split workspace of an image's padded MLA plans (a recording's, in the arena).
  static int64_t PlanWorkspaceBytes(const StepInputImage& image, int64_t kv_lora);
  // Where each staged slot's bytes sit in a graph's input buffer.
  struct InputRegion {
    size_t offset = 0, capacity = 0;
  };
  absl::Status ReplayStepGraph(CudaStepGraph& graph, const StepGraphInput& in);
  // The RoPE tables on the device (uploaded when the model's table grows).
  void StageRope(const RopeTable& rope);
  void LinearInto(const float* x, int64_t m, const Weight& w, float* out);
  // The block-scaled FP8 / BF16 tensor-core products; false when the shape does not fit.
  bool LinearFp8(const float* x, int64_t m, const Weight& w, float* out);
  bool LinearBf16(const float* x, int64_t m, const Weight& w, float* out);

  // The device table of a MoE layer's expert weights for the grouped GEMMs (moe/), made once
  // per layer; null when its experts do not qualify (dtype, block sizes, shapes).
  const MoeExpertWeights* GroupedExperts(std::span<const MlpWeights> experts,
                                         const MlpWeights* shared = nullptr);
  // The routed experts (and `shared` as expert E when given) through the grouped kernels;
  // false, with nothing done, when they do not qualify.
  bool GroupedMoe(const Tensor& x, std::span<const MlpWeights> experts, const MlpWeights* shared,
                  const Tensor& ids, const Tensor& weights, Tensor& out);
  // The tensor-core MLA kernel (mla/decode.h) takes this cache.
  bool UseDecodeKernel(const LatentCacheShape& s) const;

  CudaOpsOptions options_;
  int sms_ = 1;  // multiprocessors: the MLA split plan fills them
  cudaStream_t stream_;
  std::unique_ptr<BlasLt> blas_;
  absl::Status error_;
  Staged ids_{"token ids"}, rows_{"gathered rows"}, positions_{"positions"},
      offsets_{"cache slots"}, mla_rows_{"MLA rows"}, mla_tables_{"block tables"},
      moe_rows_{"per-expert token rows"}, moe_scales_{"per-expert routing weights"},
      add_rows_{"rows' targets"}, add_weights_{"rows' weights"}, live_rows_{"live rows"};
  // The RoPE table last uploaded: its host addresses, size and last position's values.
  const float* rope_host_ = nullptr;
  const float* rope_host_sin_ = nullptr;
  int64_t rope_positions_ = 0, rope_dim_ = 0;
  std::vector<float> rope_last_;
  Tensor rope_cos_, rope_sin_;
  // Tables replaced after a graph was recorded: graphs still read them.
  std::vector<Tensor> retired_rope_;
  // An MLA split plan, the sequences it was made for (reused while they repeat: every layer
  // of a step) and its device copy; one for decode-like sequences, one for longer chunks.
  struct DecodePlan {
    std::vector<MlaDecodeSequence> seqs;
    int64_t heads = 0;
    bool for_graph = false;  // padded to a graph's fixed shape
    MlaDecodePlan plan;
    Staged data{"MLA plan"};
  };
  DecodePlan decode_plans_[2];
  // GroupedExperts' tables by the layer's expert list: the pointers they were made from (to
  // tell another list at a reused address apart), whether it qualified, the device copy.
  struct ExpertTable {
    std::vector<MoeExpertWeights> host;
    bool eligible = false;
    Tensor device;
  };
  std::map<std::pair<const MlpWeights*, const MlpWeights*>, ExpertTable> expert_tables_;

  // Activation bytes alive (eager allocations), shared with their deleters.
  struct ActivationStats {
    std::atomic<int64_t> live{0}, peak{0};
  };
  std::shared_ptr<ActivationStats> activations_ = std::make_shared<ActivationStats>();
  // Recording: the arena activations come from, and where staged slots go.
  struct GraphArena {
    std::mutex mu;
    ArenaAllocator alloc;
    Tensor memory;
    explicit GraphArena(int64_t bytes) : alloc(bytes) {}
  };
  // The arena the last recording used (kept alive by its graphs), and the recording's own.
  std::weak_ptr<GraphArena> arena_;
  std::shared_ptr<GraphArena> recording_arena_;
  bool capturing_ = false;
  bool graphs_made_ = false;
  std::unique_ptr<CudaStepGraph> recording_;
  std::map<const Staged*, InputRegion> input_regions_;
  std::vector<uint8_t> recorded_image_;  // the recorded step's input bytes (for the check)
  uint8_t* recording_inputs_ = nullptr;  // the graph's device input buffer
};

// A checkpoint weight as the kernels see it (its data and scales on the device).
WeightView ViewOf(const Weight& w);
// A latent cache's token format as the kernels see it.
LatentFormat FormatOf(const LatentCacheShape& shape);

}  // namespace dserve::kernels::cuda
