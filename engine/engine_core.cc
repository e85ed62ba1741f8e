#include "engine/engine_core.h"

#include <optional>
#include <cstdio>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "models/greedy_decode.h"
#include "core/check.h"

namespace dserve::engine {
namespace {

// Sample i of a request draws from SequenceRng(seed + i * kSeedStride): distinct streams.
constexpr uint64_t kSeedStride = 0x9E3779B97F4A7C15ull;

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<EngineCore>> EngineCore::Create(models::DeepseekModel& model,
                                                               const Tokenizer* tokenizer,
                                                               const EngineConfig& config) {
  if (config.page_size < 1) return absl::InvalidArgumentError("page size must be >= 1");
  if (!kernels::IsLatentCacheDType(config.kv_dtype)) {
    return absl::InvalidArgumentError("the KV cache dtype must be bf16, fp8 or f32");
  }
  if (config.scheduler.max_batched_tokens < 1 || config.scheduler.max_num_seqs < 1) {
    return absl::InvalidArgumentError("--max-batched-tokens and --max-num-seqs must be >= 1");
  }
  kernels::LatentCacheShape shape = model.CacheShape(1, config.page_size);
  shape.dtype = config.kv_dtype;
  int64_t pages = config.num_pages;
  if (pages <= 0) {
    if (!(config.kv_cache_gb > 0)) return absl::InvalidArgumentError("--kv-cache-gb must be > 0");
    pages = static_cast<int64_t>(config.kv_cache_gb * (1ull << 30) / shape.page_bytes());
  }
  if (config.num_speculative_tokens < 0 ||
      config.num_speculative_tokens > kMaxSpeculativeTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--num-speculative-tokens must be 0 (off) to ", kMaxSpeculativeTokens, ", got ",
        config.num_speculative_tokens));
  }
  if (config.num_speculative_tokens > 0 && !model.has_mtp()) {
    return absl::InvalidArgumentError(
        "--speculative mtp needs a checkpoint with its MTP layer (model.layers."
        + std::to_string(model.config().num_hidden_layers) + ".*)");
  }
  if (pages < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-gb ", config.kv_cache_gb, " holds no page of ", config.page_size,
        " tokens (", shape.page_bytes(), " bytes each)"));
  }
  if (config.graph_max_batch < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cuda-graph-max-batch must be >= 0 (0: no graphs), got ", config.graph_max_batch));
  }
  const bool graphs = config.graph_max_batch > 0 && model.ops().device() != Device::kCpu;
  shape.num_pages = pages + (graphs ? 1 : 0);
  DSERVE_ASSIGN_OR_RETURN(kernels::LatentCache cache, model.NewLatentCache(shape));
  std::unique_ptr<EngineCore> core(
      new EngineCore(model, tokenizer, config, std::move(cache), pages));
  if (graphs) {
    models::StepGraphOptions o;
    o.batch_sizes = !config.graph_batch_sizes.empty()
                        ? config.graph_batch_sizes
                        : models::DefaultGraphBatchSizes(
                              std::min(config.graph_max_batch, config.scheduler.max_num_seqs));
    o.max_rows_per_step = config.scheduler.max_batched_tokens;
    o.rows_per_sequence = {1};
    if (config.num_speculative_tokens > 0) {
      o.rows_per_sequence.push_back(1 + config.num_speculative_tokens);
    }
    o.max_context = model.config().max_position_embeddings;
    o.scratch_page = static_cast<int32_t>(pages);  // the page past the manager's
    absl::StatusOr<std::unique_ptr<models::StepGraphs>> g =
        models::StepGraphs::Capture(model, core->cache_, o);
    if (g.ok()) {
      core->graphs_ = std::move(g).value();
      core->runner_->set_graphs(core->graphs_.get());
    } else {
      // Graphs only save launch time: a model whose step cannot be recorded (its experts take
      // the per-expert path, a parallel model, no room for the arena) still serves, eagerly.
      std::fprintf(stderr,
                   "dserve: decode steps run without CUDA graphs (--cuda-graph-max-batch 0 "
                   "says so quietly): %s\n",
                   std::string(g.status().message()).c_str());
    }
  }
  return core;
}

EngineCore::EngineCore(models::DeepseekModel& model, const Tokenizer* tokenizer,
                       const EngineConfig& config, kernels::LatentCache cache,
                       int64_t kv_pages)
    : model_(model),
      tokenizer_(tokenizer),
      config_(config),
      cache_(std::move(cache)),
      sample_pool_(std::max(1, config.sampler_threads)) {
  kv_ = std::make_unique<KvCacheManager>(
      KvCacheConfig{kv_pages, config.page_size, config.enable_prefix_caching},
      [this](int32_t src, int32_t dst) { model_.CopyCachePage(cache_, src, dst); });
  scheduler_ = std::make_unique<Scheduler>(config.scheduler, *kv_);
  runner_ = std::make_unique<ModelRunner>(model, cache_, *kv_, config.mla_mode);
}

absl::Status EngineCore::Validate(const Request& r) const {
  const models::ModelConfig& c = model_.config();
  DSERVE_RETURN_IF_ERROR(r.params.Validate(c.vocab_size));
  if (r.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " is ", r.prompt[i],
                                                     ", outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.params.max_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt (", r.prompt.size(), " tokens) plus max_tokens (", r.params.max_tokens,
        ") is ", total, " tokens, beyond the model's context of ", c.max_position_embeddings));
  }
  const int64_t pages = (total + kv_->page_size() - 1) / kv_->page_size();
  if (pages > kv_->num_pages()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt plus max_tokens needs ", pages, " KV-cache pages of ", kv_->page_size(),
        " tokens; the cache has ", kv_->num_pages(), " (raise --kv-cache-gb)"));
  }
  if (r.params.n > config_.scheduler.max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("n = ", r.params.n,
                                                   " samples exceed --max-num-seqs ",
                                                   config_.scheduler.max_num_seqs));
  }
  if (!r.params.stop.empty() && (!tokenizer_ || !r.detokenize)) {
    return absl::InvalidArgumentError("stop strings need the engine's tokenizer and detokenize");
  }
  return absl::OkStatus();
}

std::unique_ptr<Sequence> EngineCore::NewSequence(const std::shared_ptr<RequestState>& request,
                                                  int index) {
  auto seq = std::make_unique<Sequence>(next_sequence_++, request, index,
                                        request->seed + index * kSeedStride);
  const SamplingParams& p = request->request.params;
  if (tokenizer_ && request->request.detokenize) {
    seq->detokenizer =
        std::make_unique<IncrementalDetokenizer>(*tokenizer_, p.skip_special_tokens, p.stop);
    seq->detokenizer->SetStopsArmed(p.min_tokens == 0);  // armed once min_tokens are out
  }
  ++request->live_samples;
  return seq;
}

absl::Status EngineCore::Add(RequestId id, Request request) {
  DSERVE_RETURN_IF_ERROR(Validate(request));
  if (requests_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", id, " is already running"));
  }
  auto state = std::make_shared<RequestState>();
  state->id = id;
  state->seed = request.params.seed ? *request.params.seed : std::random_device()() * 0x100000001ull;
  state->request = std::move(request);
  state->added_at = std::chrono::steady_clock::now();
  std::unique_ptr<Sequence> seq = NewSequence(state, 0);
  scheduler_->AddWaiting(seq.get());
  sequences_[seq->id] = std::move(seq);
  requests_[id] = std::move(state);
  return absl::OkStatus();
}

void EngineCore::Cancel(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  std::shared_ptr<RequestState> r = it->second;
  std::vector<int64_t> ids;
  for (const auto& [sid, seq] : sequences_) {
    if (seq->request == r) ids.push_back(sid);
  }
  std::sort(ids.begin(), ids.end());
  for (int64_t sid : ids) {
    Sequence& seq = *sequences_[sid];
    RequestOutput out;
    out.request = id;
    out.index = seq.index;
    seq.finish = FinishReason::kCancelled;
    out.finish = FinishReason::kCancelled;
    Finish(seq, out);
    pending_.push_back(std::move(out));
    sequences_.erase(sid);
  }
}

std::vector<int32_t> EngineCore::BannedIds(const Sequence& seq, int64_t generated) const {
  const SamplingParams& p = seq.params();
  if (generated >= p.min_tokens) return {};
  std::vector<int32_t> banned = p.stop_token_ids;
  if (!p.ignore_eos) banned.push_back(static_cast<int32_t>(model_.config().eos_token_id));
  std::sort(banned.begin(), banned.end());
  banned.erase(std::unique(banned.begin(), banned.end()), banned.end());
  return banned;
}

void EngineCore::Finish(Sequence& seq, RequestOutput& out) {
  scheduler_->Remove(&seq);
  RequestState& r = *seq.request;
  if (--r.live_samples == 0) {
    out.request_finished = true;
    out.usage.prompt_tokens = static_cast<int64_t>(r.request.prompt.size());
    out.usage.completion_tokens = r.completion_tokens;
    out.usage.cached_prompt_tokens = r.cached_prompt_tokens;
    out.queue_seconds = r.queue_seconds;
    requests_.erase(r.id);
  }
}

void EngineCore::Accept(Sequence& seq, const SampledToken& sampled,
                        std::vector<RequestOutput>* outputs) {
  const SamplingParams& p = seq.params();
  const int32_t t = sampled.token;
  seq.tokens.push_back(t);
  seq.penalties.Add(t);
  ++seq.request->completion_tokens;
  RequestOutput out;
  out.request = seq.request->id;
  out.index = seq.index;
  out.tokens.push_back(t);
  if (p.logprobs) out.logprobs.push_back(sampled);
  FinishReason reason = FinishReason::kNone;
  const bool is_eos = t == model_.config().eos_token_id;
  if ((is_eos && !p.ignore_eos) ||
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), t) != p.stop_token_ids.end()) {
    reason = FinishReason::kStop;  // the stop token's text is not part of the output
    out.stop_token = t;
  } else if (seq.detokenizer) {
    if (seq.generated() >= p.min_tokens) seq.detokenizer->SetStopsArmed(true);
    IncrementalDetokenizer::Delta delta = seq.detokenizer->Add(t);
    out.text = std::move(delta.text);
    if (delta.stopped) {
      reason = FinishReason::kStop;
      out.stop_index = delta.stop_index;
    }
  }
  if (reason == FinishReason::kNone && seq.generated() >= p.max_tokens) {
    reason = FinishReason::kLength;
  }
  if (reason != FinishReason::kNone) {
    if (seq.detokenizer && !out.stop_index) out.text += seq.detokenizer->Finish().text;
    seq.finish = reason;
    out.finish = reason;
    Finish(seq, out);
  }
  outputs->push_back(std::move(out));
}

void EngineCore::Fork(Sequence& first, std::span<const float> logits,
                      std::vector<RequestOutput>* outputs) {
  RequestState& r = *first.request;
  r.forked = true;
  for (int i = 1; i < r.request.params.n; ++i) {
    std::unique_ptr<Sequence> child = NewSequence(first.request, i);
    child->num_computed = first.num_computed;
    kv_->Fork(first.id, child->id);
    scheduler_->AddRunning(child.get());
    const std::vector<int32_t> banned = BannedIds(*child);
    const SampledToken s = Sample(logits, child->params(), child->penalties, banned, child->rng);
    Sequence* c = child.get();
    sequences_[c->id] = std::move(child);
    Accept(*c, s, outputs);
  }
}

absl::Status EngineCore::Step(std::vector<RequestOutput>* outputs) {
  const auto t0 = std::chrono::steady_clock::now();
  for (RequestOutput& o : pending_) outputs->push_back(std::move(o));
  pending_.clear();
  SchedulerOutput work = scheduler_->Schedule();
  const auto t1 = std::chrono::steady_clock::now();
  stats_.schedule_seconds += Seconds(t0, t1);
  stats_.peak_used_pages = std::max(stats_.peak_used_pages, kv_->num_used_pages());
  if (work.empty()) return absl::OkStatus();
  for (const ScheduledWork& w : work.work) {
    RequestState& r = *w.seq->request;
    if (r.queue_seconds < 0) r.queue_seconds = Seconds(r.added_at, t1);
  }

  RunnerOutput& run = run_;
  const absl::Status status = runner_->Run(work, &run);
  const auto t2 = std::chrono::steady_clock::now();
  if (!status.ok()) {
    // The step's requests cannot go on; report them and release their pages.
    std::vector<RequestId> failed;
    for (const ScheduledWork& w : work.work) failed.push_back(w.seq->request->id);
    std::sort(failed.begin(), failed.end());
    failed.erase(std::unique(failed.begin(), failed.end()), failed.end());
    for (RequestId id : failed) {
      Cancel(id);
      for (RequestOutput& o : pending_) {
        o.finish = FinishReason::kError;
        o.error = std::string(status.message());
        outputs->push_back(std::move(o));
      }
      pending_.clear();
    }
    return status;
  }
  // Rows with drafts are final only once checked: their pages wait for the check.
  for (const ScheduledWork& w : work.work) {
    w.seq->num_computed += w.num_tokens;
    if (w.seq->num_drafts == 0) kv_->MarkComputed(w.seq->id, w.seq->tokens, w.seq->num_computed);
  }

  // The sampler is a pure function of its inputs and each sequence's own random stream, so
  // sequences sample in parallel and the result does not depend on the batch.
  const int64_t vocab = model_.config().vocab_size;
  const int64_t n = static_cast<int64_t>(run.items.size());
  std::vector<std::vector<SampledToken>> sampled(n);
  sample_pool_.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Sequence& seq = *work.work[run.items[i]].seq;
      sampled[i] = SampleItem(seq, run.logits.data() + run.logit_row[i] * vocab);
    }
  });
  // Per work item: how many of its rows hold final tokens (the MTP head runs over those).
  std::vector<int64_t> valid_rows(work.work.size());
  for (size_t w = 0; w < work.work.size(); ++w) valid_rows[w] = work.work[w].num_tokens;
  std::vector<int64_t> finished;
  bool verified = false;  // this step checked drafts
  for (int64_t i = 0; i < n; ++i) {
    Sequence& seq = *work.work[run.items[i]].seq;
    const std::vector<SampledToken>& tokens = sampled[i];
    if (seq.num_drafts > 0) {
      // Keep the accepted drafts in place, register the pages they complete, then take the
      // drafts out and accept every token the regular way (stop conditions included).
      const int64_t accepted = static_cast<int64_t>(tokens.size()) - 1;
      const int64_t rejected = seq.num_drafts - accepted;
      ++stats_.verifications;
      stats_.draft_tokens += seq.num_drafts;
      for (int64_t j = 0; j < seq.num_drafts; ++j) ++stats_.drafts_at[j];
      verified = true;
      seq.DropDrafts(rejected);
      seq.num_computed -= rejected;
      valid_rows[run.items[i]] -= rejected;
      kv_->MarkComputed(seq.id, seq.tokens, seq.num_computed);
      seq.DropDrafts(seq.num_drafts);
    }
    const bool fork = seq.index == 0 && !seq.request->forked && seq.request->request.params.n > 1;
    if (fork) {
      Fork(seq, std::span<const float>(run.logits.data() + run.logit_row[i] * vocab, vocab),
           outputs);
    }
    int64_t emitted = 0;
    const size_t first_output = outputs->size();
    for (const SampledToken& t : tokens) {
      Accept(seq, t, outputs);
      ++emitted;
      if (seq.finish != FinishReason::kNone) break;
    }
    MergeOutputs(first_output, outputs);
    // Accepted drafts count once emitted: a stop inside an accepted run ends the count there.
    const int64_t accepted_drafts = std::min<int64_t>(emitted, tokens.size() - 1);
    stats_.accepted_draft_tokens += accepted_drafts;
    for (int64_t j = 0; j < accepted_drafts; ++j) ++stats_.accepted_at[j];
    if (seq.finish != FinishReason::kNone) finished.push_back(seq.id);
  }
  const auto sampled_at = std::chrono::steady_clock::now();
  if (config_.num_speculative_tokens > 0) {
    absl::Status drafted = Draft(work, valid_rows);
    // An error the backend recorded after the last MTP pass (a gather running out of memory)
    // belongs to drafting too, not to the next step.
    if (drafted.ok()) drafted = model_.ops().TakeError();
    // A failed draft costs only speed: the sequences decode on without one.
    if (!drafted.ok()) DropAllDrafts();
  }
  for (const auto& [id, seq] : sequences_) {
    if (seq->finish != FinishReason::kNone) finished.push_back(id);
  }
  for (int64_t id : finished) sequences_.erase(id);
  const auto t3 = std::chrono::steady_clock::now();
  ++stats_.steps;
  stats_.tokens += work.num_tokens;
  stats_.forward_seconds += Seconds(t1, t2);
  if (runner_->last_step_graphed()) ++stats_.graph_steps;
  if (verified) stats_.verify_forward_seconds += Seconds(t1, t2);
  stats_.sample_seconds += Seconds(t2, sampled_at);
  stats_.mtp_seconds += Seconds(sampled_at, t3);
  stats_.step_seconds += Seconds(t0, t3);
  return absl::OkStatus();
}

void EngineCore::MergeOutputs(size_t first, std::vector<RequestOutput>* outputs) {
  if (outputs->size() <= first + 1) return;
  // The last output holds the finish fields; the earlier ones' tokens, logprobs and text go
  // in front of its own.
  RequestOutput merged = std::move(outputs->back());
  std::vector<int32_t> tokens;
  std::vector<SampledToken> logprobs;
  std::string text;
  for (size_t k = first; k + 1 < outputs->size(); ++k) {
    RequestOutput& o = (*outputs)[k];
    tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
    logprobs.insert(logprobs.end(), o.logprobs.begin(), o.logprobs.end());
    text += o.text;
  }
  tokens.insert(tokens.end(), merged.tokens.begin(), merged.tokens.end());
  logprobs.insert(logprobs.end(), merged.logprobs.begin(), merged.logprobs.end());
  merged.tokens = std::move(tokens);
  merged.logprobs = std::move(logprobs);
  merged.text = std::move(text) + merged.text;
  outputs->resize(first);
  outputs->push_back(std::move(merged));
}

void EngineCore::DropAllDrafts() {
  for (auto& [id, seq] : sequences_) seq->DropDrafts(seq->num_drafts);
}

std::vector<SampledToken> EngineCore::SampleItem(Sequence& seq, const float* logits) const {
  const int64_t vocab = model_.config().vocab_size;
  const int64_t drafts = seq.num_drafts;
  const int32_t* draft = seq.tokens.data() + seq.tokens.size() - drafts;
  std::vector<SampledToken> out;
  // Later positions see the earlier drafts as generated tokens (penalties, min_tokens).
  std::optional<PenaltyState> penalties;
  for (int64_t i = 0; i <= drafts; ++i) {
    const PenaltyState& pen = penalties ? *penalties : seq.penalties;
    const std::vector<int32_t> banned = BannedIds(seq, seq.generated() + i);
    out.push_back(Sample(std::span<const float>(logits + i * vocab, vocab), seq.params(), pen,
                         banned, seq.rng));
    if (i == drafts || out.back().token != draft[i]) break;
    if (!penalties) penalties = seq.penalties;
    penalties->Add(draft[i]);
  }
  return out;
}

absl::Status EngineCore::Draft(const SchedulerOutput& work, const std::vector<int64_t>& valid_rows) {
  const RunnerOutput& run = run_;
  std::vector<int32_t> next_tokens, positions, logit_rows;
  std::vector<Sequence*> drafting;
  std::vector<int32_t> rows;  // the main model's batch rows to gather
  kernels::AttentionBatch batch;
  for (size_t w = 0; w < work.work.size(); ++w) {
    Sequence& seq = *work.work[w].seq;
    // Finished sequences have released their pages; a preempted one has none.
    if (seq.finish != FinishReason::kNone || !kv_->HasSequence(seq.id) || valid_rows[w] == 0) {
      continue;
    }
    // Row j (position p) pairs the main model's state at p with the token at p + 1.
    const int64_t first = seq.num_computed - valid_rows[w];
    const int64_t count =
        std::min<int64_t>(valid_rows[w], static_cast<int64_t>(seq.tokens.size()) - 1 - first);
    if (count <= 0) continue;
    const int64_t row_begin = static_cast<int64_t>(next_tokens.size());
    AppendSlices(seq, kv_->BlockTable(seq.id), first, first + count, row_begin, &batch);
    for (int64_t j = 0; j < count; ++j) {
      next_tokens.push_back(seq.tokens[first + j + 1]);
      positions.push_back(static_cast<int32_t>(first + j));
    }
    for (int64_t j = 0; j < count; ++j) rows.push_back(static_cast<int32_t>(run.batch_row[w] + j));
    // A decoding sequence with room for two more tokens drafts the one after its next.
    if (first + count == seq.num_computed && seq.decoding() && seq.generated() > 0 &&
        seq.generated() + 1 < seq.params().max_tokens) {
      logit_rows.push_back(static_cast<int32_t>(next_tokens.size() - 1));
      drafting.push_back(&seq);
    }
  }
  if (next_tokens.empty()) return absl::OkStatus();
  const Tensor hidden = GatherRows(*run.hidden, rows);
  batch.positions = positions;
  Tensor mtp_hidden;
  const bool chain = config_.num_speculative_tokens > 1 && !drafting.empty();
  DSERVE_RETURN_IF_ERROR(RunMtp(next_tokens, hidden, std::move(batch), logit_rows,
                                chain ? &mtp_hidden : nullptr));
  AppendDrafts(drafting);
  if (!chain) return absl::OkStatus();
  // Further drafts: the MTP module again, fed its own output and its last draft, one position
  // on. Its cache entries there are provisional: the pass after verification rewrites them.
  Tensor prev = GatherRows(mtp_hidden, logit_rows);
  for (int depth = 2; depth <= config_.num_speculative_tokens && !drafting.empty(); ++depth) {
    std::vector<Sequence*> next;
    std::vector<int32_t> tokens, pos, gather;
    kernels::AttentionBatch b;
    for (size_t i = 0; i < drafting.size(); ++i) {
      Sequence& seq = *drafting[i];
      // Room for 1 + depth more tokens, and a page for the MTP entry at `q`.
      const int64_t q = seq.num_computed + depth - 2;
      if (seq.generated() + depth >= seq.params().max_tokens ||
          !kv_->Reserve(seq.id, seq.num_computed, q + 1)) {
        continue;
      }
      AppendSlices(seq, kv_->BlockTable(seq.id), q, q + 1, static_cast<int64_t>(tokens.size()),
                   &b);
      tokens.push_back(seq.tokens.back());
      pos.push_back(static_cast<int32_t>(q));
      gather.push_back(static_cast<int32_t>(i));
      next.push_back(&seq);
    }
    if (next.empty()) break;
    const Tensor h = GatherRows(prev, gather);
    std::vector<int32_t> all_rows(tokens.size());
    std::iota(all_rows.begin(), all_rows.end(), 0);
    b.positions = pos;
    DSERVE_RETURN_IF_ERROR(RunMtp(tokens, h, std::move(b), all_rows, &mtp_hidden));
    AppendDrafts(next);
    prev = std::move(mtp_hidden);
    drafting = std::move(next);
  }
  return absl::OkStatus();
}

absl::Status EngineCore::RunMtp(std::span<const int32_t> next_tokens, const Tensor& hidden,
                                kernels::AttentionBatch batch,
                                std::span<const int32_t> logit_rows, Tensor* hidden_out) {
  models::MtpInput in;
  in.next_tokens = next_tokens;
  in.hidden = &hidden;
  in.batch = std::move(batch);
  in.logit_rows = logit_rows;
  in.mla_mode = config_.mla_mode;
  in.hidden_out = hidden_out;
  return model_.ForwardMtp(in, cache_, &mtp_logits_);
}

void EngineCore::AppendDrafts(const std::vector<Sequence*>& seqs) {
  const int64_t vocab = model_.config().vocab_size;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const std::span<const float> row(mtp_logits_.data() + i * vocab, vocab);
    int32_t draft = models::ArgMax(row);
    if (config_.draft_override_for_testing) {
      if (auto forced = config_.draft_override_for_testing(*seqs[i])) draft = *forced;
    }
    seqs[i]->tokens.push_back(draft);
    ++seqs[i]->num_drafts;
  }
}

Tensor EngineCore::GatherRows(const Tensor& t, std::span<const int32_t> rows) const {
  kernels::Ops& ops = model_.ops();
  Tensor out = ops.Empty(DType::kF32, {static_cast<int64_t>(rows.size()), t.dim(1)});
  ops.GatherRows(t, rows, out);
  return out;
}

}  // namespace dserve::engine
