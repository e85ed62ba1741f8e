// DeepseekModel: the DeepSeek-V2/V3 network (MLA + dense/MoE blocks + final norm + LM head,
// and V3's MTP module) written once as calls on kernels::Ops, over the paged latent cache.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/latent_cache.h"
#include "kernels/ops.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/expert_load.h"
#include "models/parallel_config.h"
#include "models/rank_calls.h"
#include "models/rope.h"
#include "models/weights.h"

namespace dserve::models {

// Per-layer intermediates, for tests and debugging; layer == num_hidden_layers is the MTP block.
struct LayerTrace {
  int layer;
  const Tensor& attn_out;   // after o_proj
  const Tensor& ffn_out;    // MLP or MoE output (routed + shared)
  const Tensor& layer_out;  // residual stream after the layer
  const Tensor* expert_ids;      // [T, top_k] I32 (MoE layers only)
  const Tensor* expert_weights;  // [T, top_k] F32
};
using TraceFn = std::function<void(const LayerTrace&)>;

struct ForwardInput {
  std::span<const int32_t> tokens;     // [T], the flattened new tokens of all sequences
  kernels::AttentionBatch batch;       // positions [T] and each sequence's slice
  std::span<const int32_t> logit_rows;  // rows whose logits are returned
  kernels::MlaMode mla_mode = kernels::MlaMode::kAuto;
  TraceFn trace;  // optional
};

struct ForwardOutput {
  std::vector<float> logits;  // [logit_rows.size(), vocab], host memory (capacity reused)
  Tensor hidden;              // [T, hidden]: the last hidden state after model.norm
};

// The MTP module's input: row i combines the main model's normed hidden state h[i] with the
// embedding of the token that follows it, at the same position as h[i].
struct MtpInput {
  std::span<const int32_t> next_tokens;  // [T]
  const Tensor* hidden = nullptr;        // [T, hidden], after model.norm
  kernels::AttentionBatch batch;         // positions and slices into the MTP layer's cache
  std::span<const int32_t> logit_rows;
  kernels::MlaMode mla_mode = kernels::MlaMode::kAuto;
  TraceFn trace;
  // Optional: receives the MTP block's output after shared_head.norm [T, hidden], the hidden
  // state a further draft feeds back in (SGLang's and TensorRT-LLM's chained MTP drafts).
  Tensor* hidden_out = nullptr;
};

class DeepseekModel {
 public:
  // Reads config.json and maps the checkpoint; weights stay in their stored dtype.
  // With `parallel`, this rank's part only (weight_sharding.h); every rank of the group loads
  // its own and then runs the same calls (Forward, ForwardMtp) together.
  static absl::StatusOr<std::unique_ptr<DeepseekModel>> Load(
      const std::string& dir, kernels::Ops& ops, bool show_progress = true,
      const ParallelConfig& parallel = {});

  const ModelConfig& config() const { return config_; }
  const ParallelConfig& parallel() const { return parallel_; }
  // Attention heads this rank computes (all of them without tensor parallelism).
  int local_heads() const { return config_.num_attention_heads / parallel_.tp_size; }
  // The backend the model runs on (its tensors, caches and weights live on ops().device()).
  kernels::Ops& ops() const { return ops_; }
  const ModelWeights& weights() const { return weights_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  bool has_mtp() const { return weights_.mtp.has_value(); }
  // Tokens routed to each expert so far (metrics); safe to read from any thread.
  const ExpertLoad& expert_load() const { return expert_load_; }
  // Off: steps still route (and make their counters) but add nothing to expert_load() —
  // start-up's warm-up and probe steps on scratch tokens.
  void set_count_expert_load(bool on) { count_expert_load_ = on; }
  // Whether the device counters of the expert load exist (made by the first MoE step).
  bool expert_counters_ready() const {
    return ops_.device() == Device::kCpu || !device_counts_.empty();
  }
  // Cache layer of the MTP module (after the main layers).
  int mtp_cache_layer() const { return config_.num_hidden_layers; }
  // A cache with room for every layer, the MTP layer included.
  kernels::LatentCacheShape CacheShape(int64_t num_pages, int64_t page_size = 64) const;

  // Parallel models (parallel() set): the engine drives rank 0, the leader; each call all ranks
  // must make (a cache, page copies, Forward, ForwardMtp) is announced to the others first
  // (rank_calls.h), and every other rank runs Follow(), which repeats the leader's calls on its
  // own cache until the leader's StopFollowers(). Without a parallel config these are the
  // backend's calls and Forward/ForwardMtp announce nothing.
  bool leader() const { return parallel_.rank() == 0; }
  absl::StatusOr<kernels::LatentCache> NewLatentCache(const kernels::LatentCacheShape& shape);
  void CopyCachePage(kernels::LatentCache& cache, int32_t src, int32_t dst);
  absl::Status Follow();
  absl::Status StopFollowers();

  // One forward step over a flattened batch; writes each new token's latent into the cache.
  // On ranks other than a parallel model's leader out->logits stays empty.
  absl::Status Forward(const ForwardInput& in, kernels::LatentCache& cache, ForwardOutput* out);
  // Forward in two halves, for step graphs (step_graphs.h): the device work from the
  // embedding to the logits of in.logit_rows, nothing copied to the host and nothing waited
  // for (what a graph records; `in` must have passed ValidateForward) ...
  // The outputs go into the caller's tensors: logits [logit_rows, vocab], hidden [T, hidden]
  // (a graph records their addresses; they outlive the recording).
  absl::Status ValidateForward(const ForwardInput& in, const kernels::LatentCache& cache);
  void ForwardOnDevice(const ForwardInput& in, kernels::LatentCache& cache, Tensor& logits,
                       Tensor& hidden);
  // ... and after it (or a graph's replay): the first `rows` rows of the logits to the host,
  // the step's expert load, the backend's error.
  absl::Status FinishStep(const Tensor& logits, int64_t rows, ForwardOutput* out);
  // The MTP head's logits (draft distribution for the token after next_tokens).
  absl::Status ForwardMtp(const MtpInput& in, kernels::LatentCache& cache,
                          std::vector<float>* logits);
  // The MTP head over a sequence just prefilled from position 0 (hidden: Forward's output):
  // row i pairs hidden[i] with tokens[i + 1] at position i; logits [T - 1, vocab].
  absl::Status ForwardMtpOverPrompt(std::span<const int32_t> tokens, const Tensor& hidden,
                                    std::span<const int32_t> block_table, kernels::MlaMode mode,
                                    kernels::LatentCache& cache, std::vector<float>* logits);

 private:
  DeepseekModel(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint, ModelWeights weights,
                kernels::Ops& ops, const ParallelConfig& parallel);

  absl::Status Validate(std::span<const int32_t> tokens, const kernels::AttentionBatch& batch,
                        std::span<const int32_t> logit_rows, const kernels::LatentCache& cache,
                        int cache_layer);
  // What every layer of one step shares.
  struct Step {
    const kernels::AttentionBatch& batch;
    kernels::MlaMode mode;
    const kernels::RopeTable& rope;  // covers every position of the batch
    kernels::LatentCache& cache;
    const TraceFn& trace;
  };
  Step MakeStep(const kernels::AttentionBatch& batch, kernels::MlaMode mode,
                kernels::LatentCache& cache, const TraceFn& trace);
  // Embedding, every layer and the final norm into hidden [T, hidden].
  void Trunk(const ForwardInput& in, kernels::LatentCache& cache, Tensor& hidden);
  // DP attention: the step's rows this rank owns, and where every rank's rows land when they
  // are gathered back (every rank works this out from the whole batch).
  struct LocalRows {
    std::vector<int32_t> tokens, positions, rows;  // this rank's, rows: their batch rows
    std::vector<kernels::SequenceSlice> slices;    // this rank's, renumbered from row 0
    int64_t most = 0;                              // the most rows any rank owns
    std::vector<int32_t> gathered;  // batch row -> row of the ranks' gathered rows
    kernels::AttentionBatch Batch() const;
  };
  LocalRows SelectLocalRows(std::span<const int32_t> tokens,
                            const kernels::AttentionBatch& batch) const;
  // Every rank's rows of `local` [its rows, hidden] back in batch order, on every rank.
  Tensor GatherFromRanks(const Tensor& local, const LocalRows& lr, int64_t rows);
  // The embedding and every layer for this rank's rows only; the hidden states [T, hidden] of
  // every row, on every rank.
  Tensor DpTrunk(const ForwardInput& in, kernels::LatentCache& cache);
  // x [T, hidden] goes through one decoder block in place.
  void Block(const BlockWeights& w, int layer, int cache_layer, const Step& step, Tensor& x);
  Tensor Attention(const AttentionWeights& w, int cache_layer, const Step& step, const Tensor& h);
  // With tensor parallelism the output is this rank's partial sum unless `reduce`.
  Tensor Mlp(const MlpWeights& w, const Tensor& h, bool reduce = true);
  // Tensor parallelism's sum of partial outputs over the ranks (a no-op without it).
  void SumOverRanks(Tensor& t);
  // The first collective's error of this step (returned by the step).
  absl::Status TakeCollectiveError();
  // Counts a MoE layer's routed tokens for the metrics (ids may be device memory: then
  // counted there, and added to expert_load_ by FlushExpertLoad at the end of the step).
  void RecordExpertLoad(int layer, const Tensor& ids);
  void FlushExpertLoad();
  // Logits of the chosen rows of x (already normed) through `head`, into *logits.
  void Logits(const Weight& head, const Tensor& x, std::span<const int32_t> rows,
              std::vector<float>* logits);

  ModelConfig config_;
  ParallelConfig parallel_;
  absl::Status collective_error_;
  // The leader's page copies not yet announced; a follower's cache.
  std::vector<std::pair<int32_t, int32_t>> pending_copies_;
  std::optional<kernels::LatentCache> follower_cache_;
  // Leader of a parallel model: tells the other ranks what it is about to run.
  absl::Status Announce(RankCall call);
  std::unique_ptr<Checkpoint> checkpoint_;
  ModelWeights weights_;
  kernels::Ops& ops_;
  RopeCache rope_;
  ExpertLoad expert_load_;
  bool count_expert_load_ = true;
  // Device backends: per MoE layer and expert, tokens routed so far (I32, wrapping), and the
  // values FlushExpertLoad last read.
  Tensor device_counts_;
  std::vector<uint32_t> counts_seen_;
};

}  // namespace dserve::models
