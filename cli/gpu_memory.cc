#include "cli/gpu_memory.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#if DSERVE_HAS_CUDA
#include "kernels/cuda/device_memory.h"
#endif

namespace dserve::cli {

namespace {

#if DSERVE_HAS_CUDA
// The largest step: a full token budget of prefill in one sequence, with as many logit rows
// as the engine can ask for (every running sequence, each with its drafts), main model and
// MTP module, on a cache of its own that is gone again when this returns.
absl::Status RunLargestStep(models::DeepseekModel& model, const engine::EngineConfig& config,
                            int64_t T) {
  const int64_t pages = (T + config.page_size - 1) / config.page_size;
  kernels::LatentCacheShape shape = model.CacheShape(pages, config.page_size);
  shape.dtype = config.kv_dtype;
  DSERVE_ASSIGN_OR_RETURN(kernels::LatentCache cache, model.NewLatentCache(shape));
  // Varied ids: with one repeated token every row would route to the same experts, and with
  // expert parallelism one rank's activations would be far from its share.
  std::vector<int32_t> tokens(T), positions(T), table(pages);
  for (int64_t i = 0; i < T; ++i) {
    tokens[i] = static_cast<int32_t>((i * 7919 + 11) % model.config().vocab_size);
  }
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(table.begin(), table.end(), 0);
  const int64_t logit_rows = std::min<int64_t>(
      T, config.scheduler.max_num_seqs * (1 + config.num_speculative_tokens));
  std::vector<int32_t> rows(positions.end() - logit_rows, positions.end());
  models::ForwardInput in;
  in.tokens = tokens;
  in.batch.positions = positions;
  in.batch.sequences = {{0, T, 0, table}};
  in.logit_rows = rows;
  in.mla_mode = config.mla_mode;
  models::ForwardOutput out;
  // Scratch tokens: their routing is not the served load.
  model.set_count_expert_load(false);
  absl::Status s = model.Forward(in, cache, &out);
  if (model.has_mtp() && config.num_speculative_tokens > 0) {
    models::MtpInput m;
    m.next_tokens = tokens;
    m.hidden = &out.hidden;
    m.batch = in.batch;
    m.logit_rows = rows;
    m.mla_mode = config.mla_mode;
    std::vector<float> logits;
    if (s.ok()) s = model.ForwardMtp(m, cache, &logits);
  }
  model.set_count_expert_load(true);
  return s;
}
#endif

}  // namespace

absl::StatusOr<double> GpuKvCacheBytes(const ModelSession& session,
                                       const engine::EngineConfig& config, double utilization) {
#if DSERVE_HAS_CUDA
  if (!(utilization > 0 && utilization <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-memory-utilization must be in (0, 1], got ", utilization));
  }
  models::DeepseekModel& model = *session.model;
  // The largest step's activations stay in the backend's pool afterwards, so the device's
  // free memory then already excludes them.
  const int64_t T = std::min<int64_t>(config.scheduler.max_batched_tokens,
                                      model.config().max_position_embeddings);
  model.ops().ResetActivationPeak();
  DSERVE_RETURN_IF_ERROR(RunLargestStep(model, config, T));
  DSERVE_ASSIGN_OR_RETURN(const kernels::cuda::DeviceInfo info, kernels::cuda::GetDeviceInfo());
  // The decode step graphs (not recorded for parallel models) take their activations from an
  // arena of their own, sized as models/step_graphs.cc does from a decode step no larger than
  // the probe's, plus the padded attention plans' workspace (a 64-row tile per 64 query rows
  // of every sequence and of every multiprocessor's part) and the logits and hidden states
  // every graph writes.
  double graph_arena = 0;
  if (config.graph_max_batch > 0 && !model.parallel().parallel()) {
    const models::ModelConfig& c = model.config();
    const int64_t rows = 1 + config.num_speculative_tokens;
    const int64_t seqs = std::min(config.graph_max_batch, config.scheduler.max_num_seqs);
    const int64_t most = std::min<int64_t>(seqs * rows, config.scheduler.max_batched_tokens);
    const int64_t tiles = (static_cast<int64_t>(c.num_attention_heads) * rows + 63) / 64;
    graph_arena = static_cast<double>(model.ops().ActivationPeakBytes()) * 1.25 + (64 << 20) +
                  static_cast<double>(seqs + info.multiprocessors) * 64 * tiles *
                      (c.kv_lora_rank * 4 + 8) +
                  static_cast<double>(most) * (c.vocab_size + c.hidden_size) * 4;
  }
  const double total = static_cast<double>(info.total_bytes);
  const double in_use = total - static_cast<double>(info.free_bytes);
  // Decode steps with long contexts split keys over the GPU's multiprocessors; the partial
  // results (up to a 64-row tile per sequence or multiprocessor, each row kv_lora F32 values
  // and two scalars) are not in the probe step, which never splits.
  const double splits = static_cast<double>(config.scheduler.max_num_seqs *
                                                (1 + config.num_speculative_tokens) +
                                            info.multiprocessors) *
                        64 * (model.config().kv_lora_rank * 4 + 8);
  const double kv = total * utilization - in_use - splits - graph_arena;
  std::fprintf(stderr,
               "GPU memory: %s, %.2f GB; weights + activations of a %lld-token step + runtime "
               "%.2f GB; step graphs' arena %.2f GB; KV cache %.2f GB "
               "(--gpu-memory-utilization %.2f)\n",
               info.name.c_str(), total / 1e9, static_cast<long long>(T), in_use / 1e9,
               graph_arena / 1e9, std::max(kv, 0.0) / 1e9, utilization);
  if (kv <= 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--gpu-memory-utilization ", utilization, " of ", total / 1e9, " GB leaves no room for "
        "the KV cache: ", in_use / 1e9, " GB are in use (weights, activations, runtime); raise "
        "it, or lower --max-batched-tokens / --max-num-seqs"));
  }
  return kv;
#else
  (void)session;
  (void)config;
  (void)utilization;
  return absl::FailedPreconditionError("this build has no CUDA backend");
#endif
}

}  // namespace dserve::cli
