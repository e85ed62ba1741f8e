// Sampler: turns one sequence's next-token logits into a token — banned ids, penalties,
// temperature, top-k/top-p/min-p, a seeded per-sequence random stream, and raw logprobs.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/sampling_params.h"

namespace dserve::engine {

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0;  // of the chosen token; only filled when logprobs were requested
  // The k = *logprobs most likely tokens, descending (ties: lower id first).
  std::vector<TokenLogprob> top;
};

// A counter-based random stream per sequence: draw i is a pure function of (seed, i), so a
// request's samples never depend on what else ran in the batch or on thread scheduling.
class SequenceRng {
 public:
  explicit SequenceRng(uint64_t seed);

  // In [0, 1) with 53 random bits; advances the counter.
  double Uniform();
  uint64_t draws() const { return counter_; }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

// What the penalties need: the set of prompt tokens (repetition penalty) and how often each
// token was generated (all three). Both are kept sorted by token id, so applying them costs
// O(distinct tokens seen), never O(vocab), and yields the changes already in id order.
class PenaltyState {
 public:
  struct Generated {
    int32_t token;
    int32_t count;
  };

  explicit PenaltyState(std::span<const int32_t> prompt);

  void Add(int32_t generated_token);

  bool InPrompt(int32_t token) const;
  int32_t Count(int32_t token) const;  // times generated
  int64_t num_generated() const { return num_generated_; }

  std::span<const int32_t> prompt_tokens() const { return prompt_tokens_; }  // sorted, unique
  std::span<const Generated> generated() const { return generated_; }        // sorted by token

  // Appends (token, penalised logit) for every token the penalties of `p` change, sorted by
  // token: repetition first (HF: logit > 0 divided, else multiplied), then OpenAI's
  // presence/frequency (logit -= presence * [count > 0] + frequency * count). float, as the
  // logits are.
  void AppendChanges(const SamplingParams& p, std::span<const float> logits,
                     std::vector<std::pair<int32_t, float>>& out) const;

 private:
  std::vector<int32_t> prompt_tokens_;
  std::vector<Generated> generated_;
  int64_t num_generated_ = 0;
};

// Picks the next token. Applied in this order:
//   1. banned_ids -> -inf (the caller's min_tokens ban: EOS and stop_token_ids unless
//      ignore_eos); a logit of -inf or NaN is likewise never chosen;
//   2. repetition penalty, then presence/frequency penalties (PenaltyState::AppendChanges);
//   3. temperature; 0 means greedy: the argmax (ties -> lowest id), no filter, no random draw;
//   4. top_k (the k largest, ties -> lower id);
//   5. top_p: the smallest prefix, in descending probability (ties -> lower id), of the
//      top-k-renormalised distribution whose cumulative probability >= top_p (at least one);
//   6. min_p: keep p >= min_p * p_max, decided as logit >= max_logit + T ln(min_p) (the same
//      test in log space; renormalisation does not change the ratio);
//   7. renormalise and draw exactly one u = rng.Uniform(); the token is found by inverse CDF
//      over the kept tokens in descending-probability order (ties -> lower id).
// The result is a pure function of (logits, p, penalties, banned_ids, u).
//
// Logprobs, when p.logprobs is set, are of the model's RAW distribution — log_softmax of the
// unmodified logits, before bans, penalties, temperature or filters — as vLLM returns by
// default. `top` then holds min(*p.logprobs, vocab) entries.
//
// Tokens weighing under e^-60 of the top one are left out: even a million of them fall below
// the 2^-53 resolution of the float64 sums and of the uniform draw, so they could never be
// drawn anyway, and skipping them is what lets the common paths avoid touching most of V.
//
// Cost, for vocab V (one thread; no sort of V in any common case):
//   - greedy: one vectorised read of the logits;
//   - top_k (any top_p/min_p): one selection pass that skips 64-logit blocks under the k-th
//     best so far, then O(k log k);
//   - min_p alone: the same pass with min_p's floor as the bar, then a sort of the kept set;
//   - top_p without top_k, and plain temperature: one vectorised float64 exp() pass over V for
//     the normaliser (the dominant cost: a few ns per token on SSE2), a max pass, and a selection
//     of the top 256 — 16x more, re-selected, only when the walk in descending order runs past them
//     (the full sort of the candidates is the last step);
//   - bans or penalties: one copy of the logits, patched at O(distinct tokens seen);
//   - logprobs: a max pass, an exp() pass and a top-k selection over the raw logits.
// Softmax normalisers and cumulative sums are float64. Scratch lives in thread_local vectors, so
// a thread allocates only while its vocabulary high-water mark grows (and for `top`).
SampledToken Sample(std::span<const float> logits, const SamplingParams& p,
                    const PenaltyState& penalties, std::span<const int32_t> banned_ids,
                    SequenceRng& rng);

}  // namespace dserve::engine
