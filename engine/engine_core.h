// EngineCore: the single-threaded heart of the engine. It owns the KV cache and its manager,
// the scheduler, the model runner and every live sequence; Step() runs one iteration:
// schedule, forward, sample, emit outputs, release what finished. Engine (engine.h) drives it
// from its own thread; tests and the offline benchmark may call it directly.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/thread_pool.h"
#include "engine/kv_cache_manager.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/latent_cache.h"
#include "models/deepseek_model.h"
#include "models/step_graphs.h"

namespace dserve::engine {

// Drafts per step: a verification step then runs up to 1 + 4 tokens per sequence.
inline constexpr int kMaxSpeculativeTokens = 4;

struct EngineConfig {
  SchedulerConfig scheduler;
  int64_t page_size = 64;      // tokens per KV page (FlashMLA's size)
  double kv_cache_gb = 1.0;    // memory for the latent cache; sets the page count
  int64_t num_pages = 0;       // > 0: exactly this many pages instead (tests)
  DType kv_dtype = DType::kBF16;
  bool enable_prefix_caching = true;
  kernels::MlaMode mla_mode = kernels::MlaMode::kAuto;
  int sampler_threads = 1;     // threads sampling the sequences of a step
  // MTP speculative decoding: drafts per decoding sequence and step (0: off; the model needs
  // its MTP layer; K > 1 applies the one MTP module again on its own output). The output is
  // unchanged: every position is still sampled from the main model's logits and a draft only
  // saves the step that would have produced it.
  int num_speculative_tokens = 0;
  // Decode steps of up to this many sequences replay graphs recorded at start-up (CUDA
  // graphs; models/step_graphs.h), in the buckets DefaultGraphBatchSizes gives; 0: every step
  // eager. Ignored on the CPU. The cache gets one page more, the graphs' scratch page.
  int64_t graph_max_batch = 0;
  // Tests: exactly these buckets instead (graph_max_batch must still be > 0).
  std::vector<int64_t> graph_batch_sizes;
  // Tests only: replaces the MTP head's draft for a sequence when it returns a token (the MTP
  // head still runs). Random-weight test models never draft right; this exercises the paths
  // that accept drafts.
  std::function<std::optional<int32_t>(const Sequence&)> draft_override_for_testing;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t tokens = 0;  // rows run through the model
  double schedule_seconds = 0, forward_seconds = 0, sample_seconds = 0, step_seconds = 0;
  int64_t peak_used_pages = 0;
  // Speculative decoding: verifications (a sequence's drafts checked in one step), drafts
  // checked and accepted (and emitted: a stop inside an accepted run ends the count), both also
  // by draft position (index 0: the first draft); the MTP module's time (drafting) and the
  // forward time of the steps that checked drafts.
  int64_t verifications = 0;
  int64_t draft_tokens = 0, accepted_draft_tokens = 0;
  std::array<int64_t, kMaxSpeculativeTokens> drafts_at{}, accepted_at{};
  double mtp_seconds = 0, verify_forward_seconds = 0;
  int64_t graph_steps = 0;  // steps replayed from a step graph
};

class EngineCore {
 public:
  // tokenizer may be null (then requests must not ask for text or stop strings).
  static absl::StatusOr<std::unique_ptr<EngineCore>> Create(models::DeepseekModel& model,
                                                            const Tokenizer* tokenizer,
                                                            const EngineConfig& config);

  // Whether the engine can serve this request at all: parameters in range, token ids in the
  // vocabulary, prompt + max_tokens within the context and within the whole KV cache.
  // Thread-safe (reads only the configuration).
  absl::Status Validate(const Request& request) const;
  // Queues a validated request under the caller's id.
  absl::Status Add(RequestId id, Request request);
  // Drops a request now (pages released at once); the next Step() reports it as cancelled.
  // Unknown or finished ids are ignored.
  void Cancel(RequestId id);
  // One iteration; appends this step's outputs.
  absl::Status Step(std::vector<RequestOutput>* outputs);
  bool HasWork() const { return !requests_.empty() || !pending_.empty(); }

  int64_t num_pages() const { return kv_->num_pages(); }
  int64_t page_size() const { return kv_->page_size(); }
  int64_t num_running() const { return static_cast<int64_t>(scheduler_->running().size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(scheduler_->waiting().size()); }
  int64_t total_preemptions() const { return scheduler_->total_preemptions(); }
  const KvCacheManager& kv() const { return *kv_; }
  const EngineStats& stats() const { return stats_; }
  const models::ModelConfig& model_config() const { return model_.config(); }

 private:
  // kv_pages: the pages requests may use (the cache may hold one more: the graphs' scratch).
  EngineCore(models::DeepseekModel& model, const Tokenizer* tokenizer, const EngineConfig& config,
             kernels::LatentCache cache, int64_t kv_pages);

  std::unique_ptr<Sequence> NewSequence(const std::shared_ptr<RequestState>& request, int index);
  // The ids the sampler must not pick yet (min_tokens) for the token after `generated` ones.
  std::vector<int32_t> BannedIds(const Sequence& seq, int64_t generated) const;
  std::vector<int32_t> BannedIds(const Sequence& seq) const {
    return BannedIds(seq, seq.generated());
  }
  // Samples the rows of one finished work item: the next token, or with drafts, each
  // position in turn while the sampled token equals the draft (so the tokens are exactly
  // those decoding without drafts samples). Returns the tokens to accept, in order.
  std::vector<SampledToken> SampleItem(Sequence& seq, const float* logits) const;
  // The MTP module over this step's final rows of every sequence still running; a decoding
  // sequence gets its first draft from its last row, and up to K - 1 more from the module
  // applied again on its own output.
  absl::Status Draft(const SchedulerOutput& work, const std::vector<int64_t>& valid_rows);
  void DropAllDrafts();
  // One MTP pass: logits of logit_rows into mtp_logits_, its output states into hidden_out
  // (may be null).
  absl::Status RunMtp(std::span<const int32_t> next_tokens, const Tensor& hidden,
                      kernels::AttentionBatch batch, std::span<const int32_t> logit_rows,
                      Tensor* hidden_out);
  // Appends the argmax of mtp_logits_ row i as the next draft of seqs[i].
  void AppendDrafts(const std::vector<Sequence*>& seqs);
  // Rows of a model output (on the model's device), through its backend.
  Tensor GatherRows(const Tensor& t, std::span<const int32_t> rows) const;
  // Joins the outputs from `first` on (one sequence's tokens of this step) into one, as the
  // front ends stream a step's accepted drafts in one chunk.
  static void MergeOutputs(size_t first, std::vector<RequestOutput>* outputs);
  // Appends a sampled token, decides whether the sequence ends, and reports it.
  void Accept(Sequence& seq, const SampledToken& sampled, std::vector<RequestOutput>* outputs);
  // Releases a finished sequence; returns the output's request-level fields.
  void Finish(Sequence& seq, RequestOutput& out);
  // The request's n - 1 further samples, sharing the prompt's pages, each sampling its first
  // token from the same logits.
  void Fork(Sequence& first, std::span<const float> logits, std::vector<RequestOutput>* outputs);

  models::DeepseekModel& model_;
  const Tokenizer* tokenizer_;
  EngineConfig config_;
  kernels::LatentCache cache_;
  std::unique_ptr<KvCacheManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<models::StepGraphs> graphs_;  // declared after the cache: destroyed first
  std::unique_ptr<ModelRunner> runner_;
  ThreadPool sample_pool_;
  std::unordered_map<RequestId, std::shared_ptr<RequestState>> requests_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> sequences_;
  std::vector<RequestOutput> pending_;  // cancellations to report
  RunnerOutput run_;                     // reused: its logits are megabytes
  std::vector<float> mtp_logits_;        // reused: the drafts' MTP logits
  int64_t next_sequence_ = 0;
  EngineStats stats_;
};

}  // namespace dserve::engine
