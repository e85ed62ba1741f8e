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

// Limits checked by a linear scan before nlohmann sees a body. Depth: nlohmann recurses per
// level, so hostile nesting could exhaust the stack. Members: the bodies are parsed into
// ordered_json, whose ordered_map searches linearly on every inserted key, so an object with
// m members costs m^2/2 key comparisons; an 8 MiB body of one flat object (~900k keys) would
// take minutes of an I/O thread. One object is capped at kMaxJsonObjectMembers, and the sum of
// m^2/2 over all objects at kMaxJsonMemberPairs, since ~235 objects of 4096 members each also
// fit in 8 MiB (~5 s). Arrays are not limited: token id lists are legitimately long.
inline constexpr int kMaxJsonDepth = 64;
inline constexpr int64_t kMaxJsonObjectMembers = 4096;
inline constexpr int64_t kMaxJsonMemberPairs = int64_t{1} << 24;  // ~2 objects of 4096 members

// A completions request holds at most this many prompts, and at most this many choices
// (n * number of prompts); each choice is its own engine request.
inline constexpr size_t kMaxPrompts = 256;
inline constexpr int64_t kMaxChoices = 1024;

// Either a spec or the error to send.
struct ParsedRequest {
  std::optional<GenerationSpec> spec;
  ApiError error;
  bool ok() const { return spec.has_value(); }
};

// POST /v1/chat/completions. On success spec->chat is true, spec->messages holds the messages
// with content flattened to strings (null only for an assistant turn with tool_calls);
// spec->prompts stays empty (the conversation is rendered from the messages later).
// tool_choice may be "auto" or "none"; "required" and a named function are refused with a 400,
// because dserve has no constrained decoding and so cannot force the model to call a tool.
ParsedRequest ParseChatCompletionRequest(std::string_view body);

// POST /v1/completions. spec->prompts holds one PromptInput per prompt (kText or kTokens):
// at most kMaxPrompts of them, and n * prompts.size() is at most kMaxChoices.
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

// All Parse* functions above apply the kMaxJson* limits to the whole body first.

// What a linear scan of a JSON text (outside strings) finds. Does not validate the JSON; for
// valid JSON the counts are exact (members are counted by their ':', one per member at the
// object's own level).
struct JsonShape {
  int depth = 0;                   // deepest array/object nesting; depth_limit + 1 if over it
  int64_t max_object_members = 0;  // the most members of any one object
  int64_t member_pairs = 0;        // sum over objects of m * (m - 1) / 2, m = its members
};
// Stops early (with depth = depth_limit + 1 and the counts so far) once nested deeper than
// depth_limit, which also bounds the scan's own memory.
JsonShape ScanJsonShape(std::string_view body, int depth_limit);

// The 400 for a JSON text that breaks kMaxJsonDepth, kMaxJsonObjectMembers or
// kMaxJsonMemberPairs, naming `what` (used as the error's param too), else nullopt. For JSON
// texts parsed outside this file (the gRPC *_json fields); call it before nlohmann::parse.
std::optional<ApiError> CheckJsonShape(std::string_view body, std::string_view what);

// The JSON nesting depth of body (arrays/objects, outside strings), stopping early once over
// `limit` (the result is then limit + 1). Equivalent to ScanJsonShape(body, limit).depth.
int JsonNestingDepth(std::string_view body, int limit);

}  // namespace dserve::server
