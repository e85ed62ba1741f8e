// GenerationService: what the HTTP and gRPC front ends share between a parsed request and the
// engine — model-name check, chat-template rendering, tokenisation, admission (queue limit,
// context length), submission, and turning the engine's per-sample outputs into choice deltas
// (text split into reasoning / content / tool calls, logprobs with token strings), usage,
// finish reasons and latency metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/chat/chat_template.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/api_types.h"
#include "server/metrics.h"
#include "server/openai_parse.h"
#include "server/choice_translator.h"

namespace dserve::server {

struct ServiceConfig {
  std::string served_model_name;
  std::string model_dir;
  // Requests waiting for admission beyond which new ones are refused (429).
  int64_t max_queue = 1024;
  // The longest prompt + completion served: the model's context, capped by the KV cache.
  int64_t max_model_len = 0;
};

struct GenerationEvent {
  std::vector<ChoiceDelta> choices;  // the choices with news
  bool finished = false;             // every choice has finished: usage is final
  engine::Usage usage;
  std::string error;  // the engine failed the request (then finished is set too)
};

// Called on the engine thread, in order, for one generation; must not block.
using EventSink = std::function<void(GenerationEvent&&)>;

// A running request (all its prompts and samples). Cancel from any thread.
class Generation {
 public:
  const std::string& id() const { return id_; }
  int64_t created() const { return created_; }
  int num_choices() const { return num_choices_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  // Idempotent; the sink still sees every choice finish (with "abort").
  void Cancel();

 private:
  friend class GenerationService;
  struct Choice;
  struct State;

  std::string id_;
  int64_t created_ = 0;
  int num_choices_ = 0;
  int64_t prompt_tokens_ = 0;
  engine::Engine* engine_ = nullptr;
  std::mutex mu_;
  std::vector<engine::RequestId> engine_ids_;
  bool cancelled_ = false;
};

class GenerationService {
 public:
  GenerationService(engine::Engine& engine, const engine::Tokenizer& tokenizer,
                    const engine::ChatTemplate* chat_template, ServerMetrics* metrics,
                    ServiceConfig config);

  const ServiceConfig& config() const { return config_; }
  const engine::Tokenizer& tokenizer() const { return tokenizer_; }

  // 404 unless `model` is empty or the served name.
  std::optional<ApiError> CheckModel(const std::string& model) const;
  // Renders, tokenises, checks lengths and the queue, and submits every prompt. The sink gets
  // the events; the returned handle cancels.
  std::variant<std::shared_ptr<Generation>, ApiError> Start(const GenerationSpec& spec,
                                                            EventSink sink);
  std::variant<std::vector<int32_t>, ApiError> Tokenize(const TokenizeSpec& spec) const;
  std::variant<std::string, ApiError> Detokenize(const DetokenizeSpec& spec) const;

  // Requests started and not yet finished.
  int64_t active() const { return active_->load(); }
  // From now on Start answers 503 (the server is draining).
  void BeginShutdown() { shutting_down_ = true; }
  // Cancels every running generation (shutdown past its deadline).
  void CancelAll();
  bool healthy() const;

 private:
  // The chat prompt's text, or the template's error as a 400.
  std::variant<std::string, ApiError> RenderChat(const nlohmann::ordered_json& messages,
                                                 const nlohmann::ordered_json& tools,
                                                 const nlohmann::ordered_json& kwargs,
                                                 bool add_generation_prompt) const;

  engine::Engine& engine_;
  const engine::Tokenizer& tokenizer_;
  const engine::ChatTemplate* chat_template_;
  ServerMetrics* metrics_;
  ServiceConfig config_;
  std::shared_ptr<std::atomic<int64_t>> active_ = std::make_shared<std::atomic<int64_t>>(0);
  std::atomic<bool> shutting_down_{false};
  std::mutex live_mu_;
  std::vector<std::weak_ptr<Generation>> live_;  // for CancelAll; pruned as it grows
};

}  // namespace dserve::server
