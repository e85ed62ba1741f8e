// SamplingParams: one request's decoding knobs (temperature, top-k/p, min-p, penalties, seed,
// logprobs, stop conditions, lengths) and their validation against the model's vocabulary.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dserve::engine {

// Field semantics follow vLLM / the OpenAI API so front ends can map requests one to one.
struct SamplingParams {
  float temperature = 1.0f;         // [0, inf); 0 = greedy (argmax, ties -> lowest id)
  int top_k = 0;                    // <= 0 (vLLM's -1 included): off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float presence_penalty = 0.0f;    // [-2, 2], OpenAI semantics, over generated tokens
  float frequency_penalty = 0.0f;   // [-2, 2], OpenAI semantics, over generated tokens
  float repetition_penalty = 1.0f;  // (0, 2], CTRL/HF semantics over prompt + generated tokens
  // Same seed + same logits sequence => same tokens, whatever else is in the batch.
  std::optional<uint64_t> seed;
  // nullopt: none; k in [0, 20]: the chosen token's logprob plus the top k.
  std::optional<int> logprobs;
  std::vector<int32_t> stop_token_ids;  // each in [0, vocab_size)
  std::vector<std::string> stop;        // non-empty; matched by the detokenizer, not the sampler
  int max_tokens = 16;                  // >= 1
  // EOS and stop_token_ids are banned until this many tokens were generated; [0, max_tokens].
  int min_tokens = 0;
  bool ignore_eos = false;
  int n = 1;  // [1, 128] independent samples of the prompt
  bool skip_special_tokens = true;

  // Reports every problem at once (a client fixes them in one round trip), each naming the
  // field and its allowed range, e.g. "top_p must be in (0, 1], got 1.5". InvalidArgument.
  absl::Status Validate(int64_t vocab_size) const;
};

}  // namespace dserve::engine
