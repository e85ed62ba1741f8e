// What the front ends hand the engine (a Request: token ids + sampling parameters) and what
// they get back (a stream of RequestOutput: new tokens, logprobs, text, finish reason, usage).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/sampling_params.h"

namespace dserve::engine {

using RequestId = int64_t;

struct Request {
  std::vector<int32_t> prompt;
  SamplingParams params;
  // Decode text deltas (and honour stop strings) with the engine's tokenizer; needs one.
  bool detokenize = true;
};

// Why a sequence ended. Front ends map these to OpenAI's finish_reason and HTTP/gRPC codes.
enum class FinishReason {
  kNone,       // still running
  kStop,       // EOS, a stop token id or a stop string
  kLength,     // max_tokens reached
  kCancelled,  // Cancel() or the client went away
  kError,      // the engine failed the step (message in RequestOutput::error)
};
std::string_view FinishReasonName(FinishReason reason);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;     // over all n samples
  int64_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
};

// One step's news for one of a request's n samples.
struct RequestOutput {
  RequestId request = 0;
  int index = 0;                       // which of the n samples
  // Generated this step: one, several when drafts were accepted, or none at the end.
  std::vector<int32_t> tokens;
  std::vector<SampledToken> logprobs;  // one per token when logprobs were asked for
  std::string text;                    // detokenised delta (empty without a tokenizer)
  FinishReason finish = FinishReason::kNone;
  std::optional<int> stop_index;       // which stop string ended it
  std::optional<int32_t> stop_token;   // which stop token (or EOS) ended it
  bool request_finished = false;       // every sample of the request has finished
  Usage usage;                         // filled once request_finished
  // Filled once request_finished: seconds from being queued to first running (-1: never ran).
  double queue_seconds = -1;
  std::string error;
};

}  // namespace dserve::engine
