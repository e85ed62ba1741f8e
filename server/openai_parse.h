// Turns the OpenAI-compatible request bodies (chat/completions, completions, tokenize,
// detokenize) into typed specs, or into the 400 that names the offending field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/api_types.h"

namespace dserve::server {

// Bodies nested deeper than this are refused before nlohmann sees them.
inline constexpr int kMaxJsonDepth = 64;

// Either a spec or the error to send.
struct ParsedRequest {
  std::optional<GenerationSpec> spec;
  ApiError error;
  bool ok() const { return spec.has_value(); }
};

// POST /v1/chat/completions. On success spec->chat is true, spec->messages holds the messages
// with content flattened to strings (null only for an assistant turn with tool_calls);
// spec->prompts stays empty (the conversation is rendered from the messages later).
ParsedRequest ParseChatCompletionRequest(std::string_view body);

// POST /v1/completions. spec->prompts holds one PromptInput per prompt (kText or kTokens).
ParsedRequest ParseCompletionRequest(std::string_view body);

// POST /tokenize: {"model"?, "prompt": string} or {"model"?, "messages": [...],
// "add_generation_prompt"?: bool, "chat_template_kwargs"?: object}, plus "add_special_tokens"?
// (default true for a prompt, false for messages, whose template already places BOS).
struct TokenizeSpec {
  std::string model;
  bool chat = false;
  std::string prompt;
  nlohmann::ordered_json messages;  // validated and flattened as for chat completions
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  bool add_generation_prompt = true;
  bool add_special_tokens = true;
};
std::variant<TokenizeSpec, ApiError> ParseTokenizeRequest(std::string_view body);

// POST /detokenize: {"model"?, "tokens": [int...]}.
struct DetokenizeSpec {
  std::string model;
  std::vector<int32_t> tokens;
};
std::variant<DetokenizeSpec, ApiError> ParseDetokenizeRequest(std::string_view body);

// The JSON nesting depth of body (arrays/objects, outside strings), stopping early once over
// `limit` (the result is then limit + 1); used before parsing so that hostile nesting cannot
// exhaust the stack. Does not validate the JSON.
int JsonNestingDepth(std::string_view body, int limit);

}  // namespace dserve::server
