#include "models/greedy_decode.h"

#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::models {
namespace {

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int32_t ArgMax(std::span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

absl::StatusOr<GreedyResult> GreedyDecode(DeepseekModel& model, std::span<const int32_t> prompt,
                                          const GreedyOptions& o, bool keep_logits) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (o.max_new_tokens < 1) return absl::InvalidArgumentError("max new tokens must be >= 1");
  if (o.mtp_drafts && !model.has_mtp()) {
    return absl::FailedPreconditionError("MTP drafts asked for, but the model has no MTP layer");
  }
  const ModelConfig& c = model.config();
  const int64_t T = static_cast<int64_t>(prompt.size());
  const int64_t total = T + o.max_new_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", T, ") + max new tokens (", o.max_new_tokens,
        ") exceeds the model's context of ", c.max_position_embeddings, " tokens"));
  }
  const int64_t pages = (total + o.page_size - 1) / o.page_size;
  DSERVE_ASSIGN_OR_RETURN(kernels::LatentCache cache,
                          model.NewLatentCache(model.CacheShape(pages, o.page_size)));
  std::vector<int32_t> block_table(pages);
  std::iota(block_table.begin(), block_table.end(), 0);

  GreedyResult result;
  std::vector<int32_t> positions(T);
  std::iota(positions.begin(), positions.end(), 0);
  const int32_t last_row = static_cast<int32_t>(T - 1);

  ForwardInput in;
  in.tokens = prompt;
  in.batch.positions = positions;
  in.batch.sequences = {{0, T, 0, block_table}};
  in.logit_rows = std::span<const int32_t>(&last_row, 1);
  in.mla_mode = o.mla_mode;
  ForwardOutput out;
  auto start = std::chrono::steady_clock::now();
  DSERVE_RETURN_IF_ERROR(model.Forward(in, cache, &out));
  result.prefill_seconds = Since(start);

  int32_t next = ArgMax(out.logits);
  result.tokens.push_back(next);
  if (keep_logits) result.step_logits.push_back(out.logits);

  // The MTP head sees (h[i], token[i+1]) at position i; after the prompt it covers rows
  // 0..T-1, the last one pairing h[T-1] with the token just generated.
  auto draft = [&](std::span<const int32_t> next_tokens, const Tensor& hidden,
                   std::span<const int32_t> pos, int64_t cached) -> absl::Status {
    const int64_t n = static_cast<int64_t>(next_tokens.size());
    const int32_t row = static_cast<int32_t>(n - 1);
    MtpInput m;
    m.next_tokens = next_tokens;
    m.hidden = &hidden;
    m.batch.positions = pos;
    m.batch.sequences = {{0, n, cached, block_table}};
    m.logit_rows = std::span<const int32_t>(&row, 1);
    m.mla_mode = o.mla_mode;
    std::vector<float> logits;
    DSERVE_RETURN_IF_ERROR(model.ForwardMtp(m, cache, &logits));
    result.drafts.push_back(ArgMax(logits));
    return absl::OkStatus();
  };
  if (o.mtp_drafts) {
    std::vector<int32_t> shifted(prompt.begin() + 1, prompt.end());
    shifted.push_back(next);
    DSERVE_RETURN_IF_ERROR(draft(shifted, out.hidden, positions, 0));
  }

  const int32_t zero_row = 0;
  for (int step = 1; step < o.max_new_tokens; ++step) {
    if (o.stop_at_eos && next == c.eos_token_id) break;
    const int32_t pos = static_cast<int32_t>(T + step - 1);
    ForwardInput d;
    d.tokens = std::span<const int32_t>(&next, 1);
    d.batch.positions = std::span<const int32_t>(&pos, 1);
    d.batch.sequences = {{0, 1, pos, block_table}};
    d.logit_rows = std::span<const int32_t>(&zero_row, 1);
    d.mla_mode = o.mla_mode;
    start = std::chrono::steady_clock::now();
    DSERVE_RETURN_IF_ERROR(model.Forward(d, cache, &out));
    result.decode_seconds += Since(start);
    ++result.decode_steps;
    next = ArgMax(out.logits);
    result.tokens.push_back(next);
    if (keep_logits) result.step_logits.push_back(out.logits);
    if (o.mtp_drafts) {
      DSERVE_RETURN_IF_ERROR(draft(std::span<const int32_t>(&next, 1), out.hidden,
                                   std::span<const int32_t>(&pos, 1), pos));
    }
  }
  return result;
}

}  // namespace dserve::models
