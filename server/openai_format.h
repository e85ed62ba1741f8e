// OpenAI wire shapes of generation results: streaming chunks (chat.completion.chunk,
// text_completion) and whole responses (chat.completion, text_completion), built from the
// GenerationService's choice deltas. ResponseBuilder accumulates deltas for non-streaming
// replies; the chunk functions format one event's deltas for SSE.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"
#include "nlohmann/json.hpp"
#include "server/generation_service.h"

namespace dserve::server {

// What every chunk and response of one generation repeats.
struct ResponseHeader {
  std::string id;
  int64_t created = 0;
  std::string model;
  bool chat = true;
};

nlohmann::json UsageJson(const engine::Usage& usage);

// The chunk that opens a chat choice in a stream: delta {"role": "assistant", "content": ""}.
nlohmann::json ChatRoleChunk(const ResponseHeader& h, int index, bool include_usage);
// One chunk for one choice's delta (chat.completion.chunk or text_completion). text_offset:
// completions' running character count of the choice's text, advanced past this delta.
nlohmann::json DeltaChunk(const ResponseHeader& h, const ChoiceDelta& d, bool include_usage,
                          int64_t* text_offset);
// Where each of a delta's tokens starts in its choice's text, in characters (OpenAI's
// text_offset); *chars is the choice's text length so far and is advanced past the delta.
std::vector<int64_t> TokenOffsets(const ChoiceDelta& d, int64_t* chars);

// DeltaChunk(...).dump() without building a JSON tree, for the per-token common case (text or
// reasoning only: no logprobs, no tool calls); nullopt otherwise. Same bytes as dump().
std::optional<std::string> FastDeltaChunk(const ResponseHeader& h, const ChoiceDelta& d,
                                          bool include_usage);

// The stream's last chunk with include_usage: no choices, the usage.
nlohmann::json UsageChunk(const ResponseHeader& h, const engine::Usage& usage);

// Accumulates a whole generation for a non-streaming reply.
class ResponseBuilder {
 public:
  ResponseBuilder(ResponseHeader header, int num_choices, bool want_logprobs);
  void Add(const ChoiceDelta& d);
  nlohmann::json Build(const engine::Usage& usage) const;

 private:
  struct Choice {
    std::string content, reasoning;
    std::vector<ToolCall> tool_calls;
    std::vector<TokenLogprob> logprobs;
    std::vector<int64_t> offsets;  // completions' text_offset per token
    int64_t chars = 0;             // characters of content so far
    std::string finish_reason;
  };
  ResponseHeader header_;
  bool want_logprobs_;
  std::vector<Choice> choices_;
};

}  // namespace dserve::server
