#include "models/deepseek_model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "models/expert_parallel.h"
#include "models/weight_placement.h"
#include "models/weight_sharding.h"

namespace dserve::models {

using kernels::AttentionBatch;
using kernels::LatentCache;
using kernels::MlaMode;

absl::StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Load(
    const std::string& dir, kernels::Ops& ops, bool show_progress,
    const ParallelConfig& parallel) {
  DSERVE_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  DSERVE_RETURN_IF_ERROR(parallel.Validate(config));
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                          Checkpoint::Open(dir, show_progress));
  DSERVE_ASSIGN_OR_RETURN(ModelWeights weights, BindWeights(config, *checkpoint));
  // Before placement: a rank uploads (and on the CPU touches) only what it holds.
  ShardWeights(config, parallel, &weights);
  DSERVE_RETURN_IF_ERROR(PlaceWeights(ops, weights, show_progress));
  return std::unique_ptr<DeepseekModel>(new DeepseekModel(
      std::move(config), std::move(checkpoint), std::move(weights), ops, parallel));
}

namespace {

// Model layer numbers of the MoE blocks, the MTP block (numbered after the main layers) too.
std::vector<int> MoeLayers(const ModelConfig& c, const ModelWeights& w) {
  std::vector<int> layers;
  for (int i = 0; i < static_cast<int>(w.layers.size()); ++i) {
    if (w.layers[i].is_moe) layers.push_back(i);
  }
  if (w.mtp && w.mtp->block.is_moe) layers.push_back(c.num_hidden_layers);
  return layers;
}

}  // namespace

DeepseekModel::DeepseekModel(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint,
                             ModelWeights weights, kernels::Ops& ops,
                             const ParallelConfig& parallel)
    : config_(std::move(config)),
      parallel_(parallel),
      checkpoint_(std::move(checkpoint)),
      weights_(std::move(weights)),
      ops_(ops),
      rope_(config_),
      expert_load_(MoeLayers(config_, weights_), config_.n_routed_experts) {
  // The LM heads are the largest matrices a step multiplies (and nearly all of a small
  // model's work); the backend may keep them in a faster layout.
  const void* lm_head = weights_.lm_head.data;
  ops_.PrepareWeight(weights_.lm_head);
  if (weights_.mtp) {
    if (weights_.mtp->head.data == lm_head) {
      weights_.mtp->head.packed = weights_.lm_head.packed;  // V3 shares the head
    } else {
      ops_.PrepareWeight(weights_.mtp->head);
    }
  }
}

kernels::LatentCacheShape DeepseekModel::CacheShape(int64_t num_pages, int64_t page_size) const {
  kernels::LatentCacheShape s;
  s.num_layers = config_.num_hidden_layers + (has_mtp() ? 1 : 0);
  s.kv_lora_rank = config_.kv_lora_rank;
  s.rope_dim = config_.qk_rope_head_dim;
  s.page_size = page_size;
  s.num_pages = num_pages;
  return s;
}

absl::Status DeepseekModel::Validate(std::span<const int32_t> tokens, const AttentionBatch& batch,
                                     std::span<const int32_t> logit_rows,
                                     const LatentCache& cache, int cache_layer) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T == 0) return absl::InvalidArgumentError("a forward step needs at least one token");
  if (static_cast<int64_t>(batch.positions.size()) != T) {
    return absl::InvalidArgumentError(
        absl::StrCat(batch.positions.size(), " positions given for ", T, " tokens"));
  }
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[t], " at row ", t,
                                                     " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
    if (batch.positions[t] < 0 || batch.positions[t] >= config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "position ", batch.positions[t], " at row ", t,
          " is outside the model's context [0, ", config_.max_position_embeddings, ")"));
    }
  }
  const kernels::LatentCacheShape& s = cache.shape();
  if (cache_layer >= s.num_layers || s.kv_lora_rank != config_.kv_lora_rank ||
      s.rope_dim != config_.qk_rope_head_dim) {
    return absl::InvalidArgumentError("the latent cache was not shaped for this model");
  }
  int64_t covered = 0;
  for (const kernels::SequenceSlice& seq : batch.sequences) {
    if (seq.row_begin != covered || seq.num_tokens < 0 || seq.cached_tokens < 0) {
      return absl::InvalidArgumentError("sequence slices must tile the batch rows in order");
    }
    covered += seq.num_tokens;
    const int64_t need = seq.cached_tokens + seq.num_tokens;
    if (static_cast<int64_t>(seq.block_table.size()) * s.page_size < need) {
      return absl::InvalidArgumentError(
          absl::StrCat("a block table of ", seq.block_table.size(), " pages cannot hold ", need,
                       " tokens"));
    }
    for (int32_t page : seq.block_table) {
      if (page < 0 || page >= s.num_pages) {
        return absl::InvalidArgumentError(
            absl::StrCat("block table names page ", page, " of a cache with ", s.num_pages));
      }
    }
  }
  if (covered != T) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence slices cover ", covered, " rows of ", T));
  }
  for (int32_t r : logit_rows) {
    if (r < 0 || r >= T) {
      return absl::InvalidArgumentError(absl::StrCat("logit row ", r, " is not a batch row"));
    }
  }
  return absl::OkStatus();
}

void DeepseekModel::SumOverRanks(Tensor& t) {
  if (parallel_.tp_size == 1) return;
  // Always entered, whatever this rank's backend reported (its error stays for the step's
  // end): a rank that skipped a collective would leave the others waiting in it. NCCL orders
  // the sum after the queued kernels on the rank's stream; on the CPU they are done.
  absl::Status s = parallel_.comm->AllReduceSum(t.data<float>(), t.numel());
  if (collective_error_.ok() && !s.ok()) collective_error_ = std::move(s);
}

absl::Status DeepseekModel::TakeCollectiveError() {
  absl::Status s = std::move(collective_error_);
  collective_error_ = absl::OkStatus();
  return s;
}

Tensor DeepseekModel::Mlp(const MlpWeights& w, const Tensor& h, bool reduce) {
  const int64_t T = h.dim(0);
  Tensor gate = ops_.Empty(DType::kF32, {T, w.gate.rows});
  Tensor up = ops_.Empty(DType::kF32, {T, w.up.rows});
  ops_.Linear(h, w.gate, gate);
  ops_.Linear(h, w.up, up);
  ops_.SiluMul(gate, up, gate);
  Tensor out = ops_.Empty(DType::kF32, {T, w.down.rows});
  ops_.Linear(gate, w.down, out);
  if (reduce) SumOverRanks(out);
  return out;
}

DeepseekModel::Step DeepseekModel::MakeStep(const AttentionBatch& batch, MlaMode mode,
                                            LatentCache& cache, const TraceFn& trace) {
  int32_t max_pos = 0;
  for (int32_t p : batch.positions) max_pos = std::max(max_pos, p);
  return Step{batch, mode, rope_.Table(max_pos + 1), cache, trace};
}

Tensor DeepseekModel::Attention(const AttentionWeights& w, int cache_layer, const Step& step,
                                const Tensor& h) {
  const ModelConfig& c = config_;
  const int64_t T = h.dim(0);
  const int64_t H = local_heads();
  Tensor q = ops_.Empty(DType::kF32, {T, H * c.qk_head_dim()});
  if (c.q_lora_rank > 0) {
    Tensor qa = ops_.Empty(DType::kF32, {T, c.q_lora_rank});
    ops_.Linear(h, w.q_a, qa);
    ops_.RmsNorm(qa, w.q_a_norm, static_cast<float>(c.rms_norm_eps), qa);
    ops_.Linear(qa, w.q_b, q);
  } else {
    ops_.Linear(h, w.q, q);
  }
  Tensor kv_a = ops_.Empty(DType::kF32, {T, c.kv_lora_rank + c.qk_rope_head_dim});
  ops_.Linear(h, w.kv_a, kv_a);

  ops_.MlaWriteCache(kv_a, w.kv_a_norm, static_cast<float>(c.rms_norm_eps), step.rope,
                     step.batch, step.cache, cache_layer);

  kernels::MlaParams p;
  p.batch = &step.batch;
  p.cache = &step.cache;
  p.layer = cache_layer;
  p.kv_b = &w.kv_b;
  p.num_heads = static_cast<int>(H);
  p.nope_dim = c.qk_nope_head_dim;
  p.rope_dim = c.qk_rope_head_dim;
  p.v_dim = c.v_head_dim;
  p.rope = &step.rope;
  p.softmax_scale = static_cast<float>(c.SoftmaxScale());
  p.mode = step.mode;
  Tensor heads = ops_.Empty(DType::kF32, {T, H * c.v_head_dim});
  ops_.MlaAttention(p, q, heads);
  Tensor out = ops_.Empty(DType::kF32, {T, c.hidden_size});
  ops_.Linear(heads, w.o, out);
  SumOverRanks(out);  // with TP: this rank's heads' share of o_proj
  return out;
}

void DeepseekModel::Block(const BlockWeights& w, int layer, int cache_layer, const Step& step,
                          Tensor& x) {
  const ModelConfig& c = config_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t T = x.dim(0);
  if (T == 0) {
    // DP attention, a rank without rows this step: its experts still serve the others.
    if (w.is_moe && parallel_.ep_size > 1) {
      const int64_t K = c.num_experts_per_tok;
      Tensor ids = ops_.Empty(DType::kI32, {0, K}), weights = ops_.Empty(DType::kF32, {0, K});
      Tensor out = ops_.Empty(DType::kF32, {0, c.hidden_size});
      ExpertParallelInput ep{&x, &ids, &weights, w.moe.experts, c.n_routed_experts, true};
      absl::Status s = ExpertParallelMoe(ops_, *parallel_.comm, ep, out);
      if (collective_error_.ok() && !s.ok()) collective_error_ = std::move(s);
    }
    return;
  }
  Tensor h = ops_.Empty(DType::kF32, {T, c.hidden_size});
  ops_.RmsNorm(x, w.input_norm, eps, h);
  Tensor attn = Attention(w.attn, cache_layer, step, h);
  ops_.AddRmsNorm(x, attn, w.post_attention_norm, eps, h);

  Tensor ffn, ids, expert_weights;
  if (!w.is_moe) {
    ffn = Mlp(w.mlp, h);
  } else {
    const kernels::RouterConfig router = c.Router();
    ids = ops_.Empty(DType::kI32, {T, router.top_k});
    expert_weights = ops_.Empty(DType::kF32, {T, router.top_k});
    ops_.MoeRoute(h, w.moe.router, w.moe.bias, router, ids, expert_weights);
    RecordExpertLoad(layer, ids);
    ffn = ops_.Empty(DType::kF32, {T, c.hidden_size});
    const MlpWeights* shared = w.moe.shared ? &*w.moe.shared : nullptr;
    if (parallel_.ep_size > 1) {
      // Every rank ends with every token's routed sum; the shared expert (TP-summed inside
      // Mlp when sharded) is added after it, as on one rank.
      ExpertParallelInput ep{&h,  &ids, &expert_weights, w.moe.experts, c.n_routed_experts,
                             parallel_.dp_attention};
      absl::Status s = ExpertParallelMoe(ops_, *parallel_.comm, ep, ffn);
      if (collective_error_.ok() && !s.ok()) collective_error_ = std::move(s);
      if (shared) ops_.Add(ffn, Mlp(*shared, h));
    } else {
      // Without EP but with TP every expert holds this rank's rows: routed and shared
      // outputs are partial sums, added up over the ranks once.
      if (!ops_.MoeExpertsWithShared(h, w.moe.experts, shared, ids, expert_weights, ffn) &&
          shared) {
        ops_.Add(ffn, Mlp(*shared, h, /*reduce=*/false));
      }
      SumOverRanks(ffn);
    }
  }
  ops_.Add(x, ffn);
  if (step.trace) {
    step.trace(LayerTrace{layer, attn, ffn, x, w.is_moe ? &ids : nullptr,
                     w.is_moe ? &expert_weights : nullptr});
  }
}

void DeepseekModel::RecordExpertLoad(int layer, const Tensor& ids) {
  if (ids.device() == Device::kCpu) {
    if (count_expert_load_) expert_load_.Record(layer, ids.data<int32_t>(), ids.numel());
    return;
  }
  // A device backend counts on the device (no copy, no wait per layer); FlushExpertLoad
  // reads the counters once per step.
  const std::vector<int>& layers = expert_load_.layers();
  const auto it = std::find(layers.begin(), layers.end(), layer);
  if (it == layers.end()) return;
  if (device_counts_.empty()) {
    Tensor zeros = Tensor::Zeros(DType::kI32, {static_cast<int64_t>(layers.size()),
                                               config_.n_routed_experts});
    // Metrics only: without room for the counters the load is just not counted (retried at
    // the next MoE layer).
    if (!ops_.PlaceTensor(zeros).ok()) return;
    device_counts_ = std::move(zeros);
    counts_seen_.assign(device_counts_.numel(), 0);
  }
  if (!count_expert_load_) return;
  Tensor row = device_counts_.Rows(it - layers.begin(), 1);
  ops_.CountExperts(ids, row);
}

void DeepseekModel::FlushExpertLoad() {
  if (device_counts_.empty()) return;
  // A backend that already failed this step copies nothing: the deltas are then zero.
  std::vector<uint32_t> now = counts_seen_;
  ops_.CopyToHost(device_counts_, now.data());
  const int64_t E = config_.n_routed_experts;
  std::vector<int64_t> delta(E);
  for (size_t i = 0; i < expert_load_.layers().size(); ++i) {
    for (int64_t e = 0; e < E; ++e) {
      // Unsigned differences survive the counters' wrap at 2^32.
      delta[e] = static_cast<uint32_t>(now[i * E + e] - counts_seen_[i * E + e]);
    }
    expert_load_.AddCounts(i, delta.data());
  }
  counts_seen_ = std::move(now);
}

void DeepseekModel::Logits(const Weight& head, const Tensor& x, std::span<const int32_t> rows,
                           std::vector<float>* logits) {
  const int64_t n = static_cast<int64_t>(rows.size());
  // Reuses the caller's capacity: a step's logits are megabytes, and fresh allocations of
  // that size cost page faults every step.
  logits->resize(n * config_.vocab_size);
  if (n == 0) return;
  Tensor picked = ops_.Empty(DType::kF32, {n, config_.hidden_size});
  ops_.GatherRows(x, rows, picked);
  if (ops_.device() == Device::kCpu) {
    // The LM head writes straight into the result.
    Tensor out(std::make_shared<Buffer>(logits->data(), logits->size() * sizeof(float),
                                        Device::kCpu, nullptr),
               DType::kF32, {n, config_.vocab_size});
    ops_.Linear(picked, head, out);
    return;
  }
  Tensor out = ops_.Empty(DType::kF32, {n, config_.vocab_size});
  ops_.Linear(picked, head, out);
  ops_.CopyToHost(out, logits->data());
}

void DeepseekModel::Trunk(const ForwardInput& in, LatentCache& cache, Tensor& hidden) {
  const ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  Tensor x = ops_.Empty(DType::kF32, {T, c.hidden_size});
  ops_.Embedding(weights_.embed, in.tokens, x);
  const Step step = MakeStep(in.batch, in.mla_mode, cache, in.trace);
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    Block(weights_.layers[layer], layer, layer, step, x);
  }
  ops_.RmsNorm(x, weights_.final_norm, static_cast<float>(c.rms_norm_eps), hidden);
}

kernels::AttentionBatch DeepseekModel::LocalRows::Batch() const {
  kernels::AttentionBatch b;
  b.positions = positions;
  b.sequences = slices;
  return b;
}

DeepseekModel::LocalRows DeepseekModel::SelectLocalRows(std::span<const int32_t> tokens,
                                                        const AttentionBatch& batch) const {
  LocalRows lr;
  const int W = parallel_.world(), me = parallel_.rank();
  std::vector<int64_t> count(W, 0);
  std::vector<std::pair<int, int64_t>> where(tokens.size());  // batch row -> (rank, its row)
  for (const kernels::SequenceSlice& s : batch.sequences) {
    const int owner = parallel_.SliceOwner(s);
    if (owner == me) {
      kernels::SequenceSlice local = s;
      local.row_begin = static_cast<int64_t>(lr.tokens.size());
      lr.slices.push_back(local);
    }
    for (int64_t i = 0; i < s.num_tokens; ++i) {
      const int64_t row = s.row_begin + i;
      where[row] = {owner, count[owner]++};
      if (owner == me) {
        lr.tokens.push_back(tokens[row]);
        lr.positions.push_back(batch.positions[row]);
        lr.rows.push_back(static_cast<int32_t>(row));
      }
    }
  }
  lr.most = *std::max_element(count.begin(), count.end());
  for (const auto& [owner, i] : where) {
    lr.gathered.push_back(static_cast<int32_t>(owner * lr.most + i));
  }
  return lr;
}

Tensor DeepseekModel::GatherFromRanks(const Tensor& local, const LocalRows& lr, int64_t rows) {
  const int64_t H = config_.hidden_size, mine = static_cast<int64_t>(lr.rows.size());
  // Every rank's rows padded to the most any rank has, gathered to all, put in batch order.
  Tensor padded = ops_.Empty(DType::kF32, {lr.most, H});
  if (mine > 0) {
    std::vector<int32_t> all_rows(static_cast<size_t>(mine));
    std::iota(all_rows.begin(), all_rows.end(), 0);
    Tensor head = padded.Rows(0, mine);
    ops_.GatherRows(local, all_rows, head);
  }
  Tensor gathered = ops_.Empty(DType::kF32, {parallel_.world() * lr.most, H});
  absl::Status s = parallel_.comm->AllGather(padded.raw(), lr.most * H * 4, gathered.raw());
  if (collective_error_.ok() && !s.ok()) collective_error_ = std::move(s);
  Tensor out = ops_.Empty(DType::kF32, {rows, H});
  ops_.GatherRows(gathered, lr.gathered, out);
  return out;
}

Tensor DeepseekModel::DpTrunk(const ForwardInput& in, LatentCache& cache) {
  const ModelConfig& c = config_;
  const LocalRows lr = SelectLocalRows(in.tokens, in.batch);
  const int64_t mine = static_cast<int64_t>(lr.rows.size());
  Tensor x = ops_.Empty(DType::kF32, {mine, c.hidden_size});
  if (mine > 0) ops_.Embedding(weights_.embed, lr.tokens, x);
  const AttentionBatch batch = lr.Batch();
  const Step step = MakeStep(batch, in.mla_mode, cache, in.trace);
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    Block(weights_.layers[layer], layer, layer, step, x);
  }
  if (mine > 0) ops_.RmsNorm(x, weights_.final_norm, static_cast<float>(c.rms_norm_eps), x);
  return GatherFromRanks(x, lr, static_cast<int64_t>(in.tokens.size()));
}

absl::Status DeepseekModel::Announce(RankCall call) {
  // An error left from earlier work is reported before anything is announced: once a call is
  // announced, every rank runs it and its collectives to the end.
  DSERVE_RETURN_IF_ERROR(ops_.TakeError());
  call.copies = std::move(pending_copies_);
  pending_copies_.clear();
  return SendRankCall(ops_, *parallel_.comm, call);
}

absl::StatusOr<LatentCache> DeepseekModel::NewLatentCache(const kernels::LatentCacheShape& shape) {
  if (!parallel_.parallel()) return ops_.NewLatentCache(shape);
  RankCall call;
  call.kind = RankCall::kNewCache;
  call.shape = shape;
  DSERVE_RETURN_IF_ERROR(Announce(std::move(call)));
  absl::StatusOr<LatentCache> cache = ops_.NewLatentCache(shape);
  // Every rank must have its cache before any step: a rank that could not make one fails all.
  DSERVE_RETURN_IF_ERROR(AgreeAllRanks(ops_, *parallel_.comm, cache.status(),
                      absl::StatusCode::kResourceExhausted, "make its KV cache"));
  return cache;
}

void DeepseekModel::CopyCachePage(LatentCache& cache, int32_t src, int32_t dst) {
  if (parallel_.parallel() && leader()) pending_copies_.push_back({src, dst});
  ops_.CopyCachePage(cache, src, dst);
}

absl::Status DeepseekModel::StopFollowers() {
  if (!parallel_.parallel() || !leader()) return absl::OkStatus();
  return Announce(RankCall{});
}

absl::Status DeepseekModel::Follow() {
  if (!parallel_.parallel() || leader()) {
    return absl::FailedPreconditionError("only ranks other than 0 of a parallel model follow");
  }
  for (;;) {
    DSERVE_ASSIGN_OR_RETURN(RankCall call, ReceiveRankCall(ops_, *parallel_.comm));
    if (!call.copies.empty() && !follower_cache_) {
      return absl::FailedPreconditionError("the leader copied cache pages before making a cache");
    }
    for (const auto& [src, dst] : call.copies) ops_.CopyCachePage(*follower_cache_, src, dst);
    // A step that fails here fails on the leader too (its collectives ran to the end on every
    // rank): report it and keep following, as the engine keeps stepping.
    absl::Status step;
    switch (call.kind) {
      case RankCall::kStop: return ops_.TakeError();
      case RankCall::kNewCache: {
        follower_cache_.reset();  // the old one goes first, as the leader's did
        absl::StatusOr<LatentCache> cache = ops_.NewLatentCache(call.shape);
        if (cache.ok()) follower_cache_ = std::move(cache).value();
        step = AgreeAllRanks(ops_, *parallel_.comm, cache.status(),
                      absl::StatusCode::kResourceExhausted, "make its KV cache");
        break;
      }
      case RankCall::kForward: {
        if (!follower_cache_) return absl::FailedPreconditionError("a step before any cache");
        ForwardInput in;
        in.tokens = call.tokens;
        in.batch = call.Batch();
        in.logit_rows = call.logit_rows;
        in.mla_mode = call.mla_mode;
        ForwardOutput out;
        step = Forward(in, *follower_cache_, &out);
        break;
      }
      case RankCall::kForwardMtp: {
        if (!follower_cache_) return absl::FailedPreconditionError("a step before any cache");
        Tensor hidden = ops_.Empty(DType::kF32, {static_cast<int64_t>(call.tokens.size()),
                                                 config_.hidden_size});
        // A failed broadcast means the group itself is broken: stop following.
        DSERVE_RETURN_IF_ERROR(BroadcastTensor(ops_, *parallel_.comm, hidden));
        MtpInput m;
        m.next_tokens = call.tokens;
        m.hidden = &hidden;
        m.batch = call.Batch();
        m.logit_rows = call.logit_rows;
        m.mla_mode = call.mla_mode;
        Tensor hidden_out;
        if (call.hidden_out) m.hidden_out = &hidden_out;
        std::vector<float> logits;
        step = ForwardMtp(m, *follower_cache_, &logits);
        break;
      }
    }
    if (!step.ok()) {
      std::fprintf(stderr, "dserve: rank %d: %s\n", parallel_.rank(),
                   std::string(step.message()).c_str());
    }
  }
}

absl::Status DeepseekModel::Forward(const ForwardInput& in, LatentCache& cache,
                                    ForwardOutput* out) {
  DSERVE_RETURN_IF_ERROR(ValidateForward(in, cache));
  if (parallel_.parallel() && leader()) {
    RankCall call;
    call.kind = RankCall::kForward;
    call.SetBatch(in.tokens, in.batch, in.logit_rows, in.mla_mode);
    DSERVE_RETURN_IF_ERROR(Announce(std::move(call)));
  }
  if (parallel_.dp_attention) {
    out->hidden = DpTrunk(in, cache);
  } else {
    out->hidden = ops_.Empty(DType::kF32, {static_cast<int64_t>(in.tokens.size()),
                                           config_.hidden_size});
    Trunk(in, cache, out->hidden);
  }
  // Only the leader samples: the other ranks of a parallel model skip the LM head.
  if (leader()) {
    Logits(weights_.lm_head, out->hidden, in.logit_rows, &out->logits);
  } else {
    out->logits.clear();
  }
  FlushExpertLoad();
  DSERVE_RETURN_IF_ERROR(TakeCollectiveError());
  return ops_.TakeError();
}

absl::Status DeepseekModel::ValidateForward(const ForwardInput& in, const LatentCache& cache) {
  return Validate(in.tokens, in.batch, in.logit_rows, cache, 0);
}

void DeepseekModel::ForwardOnDevice(const ForwardInput& in, LatentCache& cache, Tensor& logits,
                                    Tensor& hidden) {
  DSERVE_CHECK(!parallel_.parallel()) << "a parallel model's step announces itself: use Forward";
  Trunk(in, cache, hidden);
  const int64_t n = static_cast<int64_t>(in.logit_rows.size());
  Tensor picked = ops_.Empty(DType::kF32, {n, config_.hidden_size});
  ops_.GatherRows(hidden, in.logit_rows, picked);
  ops_.Linear(picked, weights_.lm_head, logits);
}

absl::Status DeepseekModel::FinishStep(const Tensor& logits, int64_t rows, ForwardOutput* out) {
  out->logits.resize(rows * config_.vocab_size);
  if (rows > 0) ops_.CopyToHost(logits.Rows(0, rows), out->logits.data());
  FlushExpertLoad();
  DSERVE_RETURN_IF_ERROR(TakeCollectiveError());
  return ops_.TakeError();
}

absl::Status DeepseekModel::ForwardMtp(const MtpInput& in, LatentCache& cache,
                                       std::vector<float>* logits) {
  if (!has_mtp()) {
    return absl::FailedPreconditionError(
        absl::StrCat(checkpoint_->dir(), " has no MTP layer (model.layers.",
                     config_.num_hidden_layers, ".eh_proj.weight)"));
  }
  DSERVE_RETURN_IF_ERROR(
      Validate(in.next_tokens, in.batch, in.logit_rows, cache, mtp_cache_layer()));
  const ModelConfig& c = config_;
  const MtpWeights& m = *weights_.mtp;
  const int64_t T = static_cast<int64_t>(in.next_tokens.size());
  if (!in.hidden || in.hidden->dim(0) != T || in.hidden->dim(1) != c.hidden_size) {
    return absl::InvalidArgumentError("MTP input needs one main-model hidden state per token");
  }
  if (parallel_.parallel() && leader()) {
    RankCall call;
    call.kind = RankCall::kForwardMtp;
    call.SetBatch(in.next_tokens, in.batch, in.logit_rows, in.mla_mode);
    call.hidden_out = in.hidden_out != nullptr;
    DSERVE_RETURN_IF_ERROR(Announce(std::move(call)));
    // The leader's input states (the followers' own are the same up to TP rounding).
    Tensor hidden = *in.hidden;
    DSERVE_RETURN_IF_ERROR(BroadcastTensor(ops_, *parallel_.comm, hidden));
  }
  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor e = ops_.Empty(DType::kF32, {T, c.hidden_size});
  ops_.Embedding(m.embed, in.next_tokens, e);
  ops_.RmsNorm(e, m.enorm, eps, e);
  Tensor h = ops_.Empty(DType::kF32, {T, c.hidden_size});
  ops_.RmsNorm(*in.hidden, m.hnorm, eps, h);
  Tensor cat = ops_.Empty(DType::kF32, {T, 2 * c.hidden_size});
  ops_.ConcatColumns(e, h, cat);
  Tensor x = ops_.Empty(DType::kF32, {T, c.hidden_size});
  ops_.Linear(cat, m.eh_proj, x);
  if (parallel_.dp_attention) {
    // This rank's rows through the block, everyone's gathered back.
    const LocalRows lr = SelectLocalRows(in.next_tokens, in.batch);
    const int64_t mine = static_cast<int64_t>(lr.rows.size());
    Tensor xl = ops_.Empty(DType::kF32, {mine, c.hidden_size});
    if (mine > 0) ops_.GatherRows(x, lr.rows, xl);
    const AttentionBatch batch = lr.Batch();
    const Step step = MakeStep(batch, in.mla_mode, cache, in.trace);
    Block(m.block, c.num_hidden_layers, mtp_cache_layer(), step, xl);
    x = GatherFromRanks(xl, lr, T);
  } else {
    const Step step = MakeStep(in.batch, in.mla_mode, cache, in.trace);
    Block(m.block, c.num_hidden_layers, mtp_cache_layer(), step, x);
  }
  ops_.RmsNorm(x, m.head_norm, eps, x);
  if (leader()) {
    Logits(m.head, x, in.logit_rows, logits);
  } else {
    logits->clear();
  }
  if (in.hidden_out) *in.hidden_out = std::move(x);
  FlushExpertLoad();
  DSERVE_RETURN_IF_ERROR(TakeCollectiveError());
  return ops_.TakeError();
}

absl::Status DeepseekModel::ForwardMtpOverPrompt(std::span<const int32_t> tokens,
                                                 const Tensor& hidden,
                                                 std::span<const int32_t> block_table,
                                                 MlaMode mode, LatentCache& cache,
                                                 std::vector<float>* logits) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T < 2) return absl::InvalidArgumentError("the MTP head needs at least 2 tokens");
  if (hidden.dim(0) < T - 1) {
    return absl::InvalidArgumentError("MTP input needs one main-model hidden state per token");
  }
  std::vector<int32_t> positions(T - 1);
  std::iota(positions.begin(), positions.end(), 0);
  const Tensor h = hidden.Rows(0, T - 1);
  MtpInput m;
  m.next_tokens = tokens.subspan(1);
  m.hidden = &h;
  m.batch.positions = positions;
  m.batch.sequences = {{0, T - 1, 0, block_table}};
  m.logit_rows = positions;  // every row; row i sits at position i
  m.mla_mode = mode;
  return ForwardMtp(m, cache, logits);
}

}  // namespace dserve::models
