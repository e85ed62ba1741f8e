// Sequence: the engine's state for one of a request's n samples — its tokens (prompt, then
// generated), how many of them are in the KV cache, and its sampling state.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/request.h"
#include "engine/sampler.h"

namespace dserve::engine {

// What the samples of one request share.
struct RequestState {
  RequestId id = 0;
  Request request;
  int64_t cached_prompt_tokens = 0;  // prefix-cache hit when the prompt was first admitted
  uint64_t seed = 0;                 // sample i draws from SequenceRng(seed + i * kSeedStride)
  int live_samples = 0;              // samples not yet finished
  int64_t completion_tokens = 0;
  bool forked = false;               // the n - 1 further samples exist
  std::chrono::steady_clock::time_point added_at;  // when EngineCore::Add queued it
  double queue_seconds = -1;         // from added_at to its first scheduled step (-1: not yet)
};

struct Sequence {
  Sequence(int64_t id_in, std::shared_ptr<RequestState> request_in, int index_in, uint64_t seed)
      : id(id_in),
        request(std::move(request_in)),
        index(index_in),
        tokens(request->request.prompt),
        prompt_len(static_cast<int64_t>(tokens.size())),
        penalties(request->request.prompt),
        rng(seed) {}

  int64_t id;  // the KV cache manager's sequence id
  std::shared_ptr<RequestState> request;
  int index;  // which of the request's samples
  // prompt + generated, then num_drafts MTP drafts still to verify (speculative decoding)
  std::vector<int32_t> tokens;
  int64_t prompt_len;
  int64_t num_drafts = 0;
  int64_t num_computed = 0;  // tokens whose latents are in the cache
  int64_t admitted = -1;     // admission order (-1: waiting); preemption takes the newest
  int64_t preemptions = 0;
  PenaltyState penalties;
  SequenceRng rng;
  std::unique_ptr<IncrementalDetokenizer> detokenizer;  // text and stop strings (may be null)
  FinishReason finish = FinishReason::kNone;

  int64_t generated() const {
    return static_cast<int64_t>(tokens.size()) - num_drafts - prompt_len;
  }
  // Drops the unverified drafts (preemption, or a step too small to check them all).
  void DropDrafts(int64_t n) {
    tokens.resize(tokens.size() - n);
    num_drafts -= n;
  }
  // Tokens still to run through the model before the next sample (drafts included).
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - num_computed; }
  // A decode: the one token sampled last, plus its drafts.
  bool decoding() const { return pending() == 1 + num_drafts; }
  const SamplingParams& params() const { return request->request.params; }
};

}  // namespace dserve::engine
