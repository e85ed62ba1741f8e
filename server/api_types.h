// The front ends' shared vocabulary: a parsed generation request (what the OpenAI JSON or the
// gRPC message asked for, before tokenisation) and an API error in OpenAI's shape. Parsing
// lives in openai_parse.h (HTTP) and grpc_service.cc (gRPC); the GenerationService turns a
// GenerationSpec into engine requests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampling_params.h"
#include "nlohmann/json.hpp"

namespace dserve::server {

// {"error": {"message", "type", "param", "code"}} with the HTTP status it travels with.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";  // OpenAI's type names
  std::string param;                           // the offending field ("" = null)
  std::string code;                            // "" = null

  static ApiError BadRequest(std::string message, std::string param = "");
  static ApiError NotFound(std::string message, std::string param = "");
  static ApiError Unauthorized(std::string message);
  static ApiError TooLarge(std::string message);
  static ApiError TooManyRequests(std::string message);
  static ApiError Internal(std::string message);
  static ApiError Unavailable(std::string message);

  nlohmann::json ToJson() const;
};

enum class PromptKind { kChat, kText, kTokens };

// One prompt of a request (completions accept several: a list of strings or of id lists).
struct PromptInput {
  PromptKind kind = PromptKind::kText;
  std::string text;             // kText
  std::vector<int32_t> tokens;  // kTokens
};

struct GenerationSpec {
  bool chat = false;  // /v1/chat/completions (else /v1/completions)
  std::string model;  // as the client sent it
  // Chat: the messages (content already flattened to strings), tools and template kwargs, as
  // the chat template receives them.
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null when absent
  // "auto" | "none"; null when absent ("required" and named functions are refused by the
  // parser: there is no constrained decoding to force a call).
  nlohmann::ordered_json tool_choice;
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  bool add_generation_prompt = true;
  // Completions: one or more prompts (each becomes its own engine request; choices are
  // numbered prompt-major: prompt i, sample j -> index i * n + j).
  std::vector<PromptInput> prompts;
  bool echo = false;  // completions: prepend the prompt text to the choice text

  engine::SamplingParams params;  // max_tokens defaults filled in by the service if unset
  bool max_tokens_set = false;    // whether the client gave max_tokens / max_completion_tokens
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  // Chat: logprobs (bool) + top_logprobs (0..20). Completions: logprobs (int 0..5).
  bool want_logprobs = false;
  int top_logprobs = 0;
  std::string user;               // echoed nowhere; accepted for compatibility
};

}  // namespace dserve::server
