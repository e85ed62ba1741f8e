#include "server/generation_service.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace dserve::server {
namespace {

using Clock = std::chrono::steady_clock;

std::string RandomId(std::string_view prefix) {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::string id(prefix);
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  return id;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Whether the request's tools are live: tool-call markers are then kept in the text (they are
// special tokens) and parsed out of it.
bool ToolsActive(const GenerationSpec& spec) {
  if (!spec.chat || !spec.tools.is_array() || spec.tools.empty()) return false;
  return !(spec.tool_choice.is_string() && spec.tool_choice.get<std::string>() == "none");
}

}  // namespace

// Per choice: its translator and latency bookkeeping.
struct Generation::Choice {
  std::unique_ptr<ChoiceTranslator> translator;
  Clock::time_point last_token;
};

// Shared by the engine callbacks of every prompt of one generation (all on the engine thread).
struct Generation::State {
  EventSink sink;
  ServerMetrics* metrics = nullptr;
  std::shared_ptr<std::atomic<int64_t>> active;
  std::vector<Choice> choices;
  int n = 1;                  // samples per prompt
  int prompts_left = 0;       // engine requests not yet finished
  Clock::time_point start;
  bool first_token_seen = false;
  engine::Usage usage;
  std::string error;

  // Engine callbacks run on the engine thread; Start touches the state only if a submission
  // fails, which this lock orders against them.
  std::mutex mu;

  void OnOutput(int prompt_index, const engine::RequestOutput& out);
};

void Generation::State::OnOutput(int prompt_index, const engine::RequestOutput& out) {
  std::lock_guard<std::mutex> lock(mu);
  const Clock::time_point now = Clock::now();
  const int choice_index = prompt_index * n + out.index;
  GenerationEvent event;
  if (choice_index < static_cast<int>(choices.size())) {
    Choice& c = choices[choice_index];
    if (!out.tokens.empty() && metrics) {
      if (!first_token_seen) {
        metrics->ObserveTimeToFirstToken(std::chrono::duration<double>(now - start).count());
      } else if (c.last_token != Clock::time_point{}) {
        metrics->ObserveInterTokenLatency(
            std::chrono::duration<double>(now - c.last_token).count());
      }
    }
    if (!out.tokens.empty()) {
      first_token_seen = true;
      c.last_token = now;
    }
    if (!c.translator->finished()) {
      event.choices.push_back(c.translator->Translate(out));
      const auto& reason = event.choices.back().finish_reason;
      if (reason && metrics) metrics->RequestFinished(*reason);
    }
  }
  if (!out.error.empty() && error.empty()) error = out.error;
  if (out.request_finished) {
    usage.prompt_tokens += out.usage.prompt_tokens;
    usage.completion_tokens += out.usage.completion_tokens;
    usage.cached_prompt_tokens += out.usage.cached_prompt_tokens;
    if (metrics) {
      metrics->AddPromptTokens(out.usage.prompt_tokens);
      metrics->AddCachedPromptTokens(out.usage.cached_prompt_tokens);
      metrics->AddGenerationTokens(out.usage.completion_tokens);
      metrics->ObserveRequestTokens(out.usage.prompt_tokens, out.usage.completion_tokens);
      if (out.queue_seconds >= 0) metrics->ObserveQueueTime(out.queue_seconds);
    }
    --prompts_left;
  }
  if (prompts_left == 0) {
    event.finished = true;
    event.usage = usage;
    event.error = error;
    if (metrics) {
      metrics->ObserveE2eLatency(std::chrono::duration<double>(now - start).count());
    }
    active->fetch_sub(1);
  }
  if (!event.choices.empty() || event.finished) sink(std::move(event));
}

void Generation::Cancel() {
  std::vector<engine::RequestId> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    ids = engine_ids_;
  }
  for (engine::RequestId id : ids) engine_->Cancel(id);
}

GenerationService::GenerationService(engine::Engine& engine, const engine::Tokenizer& tokenizer,
                                     const engine::ChatTemplate* chat_template,
                                     ServerMetrics* metrics, ServiceConfig config)
    : engine_(engine),
      tokenizer_(tokenizer),
      chat_template_(chat_template),
      metrics_(metrics),
      config_(std::move(config)) {}

std::optional<ApiError> GenerationService::CheckModel(const std::string& model) const {
  if (model.empty() || model == config_.served_model_name) return std::nullopt;
  return ApiError::NotFound(
      absl::StrCat("The model `", model, "` does not exist; this server serves `",
                   config_.served_model_name, "`"),
      "model");
}

bool GenerationService::healthy() const { return engine_.last_error().ok() && !shutting_down_; }

std::variant<std::string, ApiError> GenerationService::RenderChat(
    const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
    const nlohmann::ordered_json& kwargs, bool add_generation_prompt) const {
  if (!chat_template_) {
    return ApiError::BadRequest(
        "this model has no chat template (tokenizer_config.json has no chat_template); use "
        "/v1/completions",
        "messages");
  }
  engine::ChatTemplateInputs inputs;
  inputs.messages = messages;
  inputs.tools = tools;
  inputs.add_generation_prompt = add_generation_prompt;
  inputs.extra = kwargs.is_object() ? kwargs : nlohmann::ordered_json::object();
  absl::StatusOr<std::string> text = chat_template_->Render(inputs);
  if (!text.ok()) {
    return ApiError::BadRequest(absl::StrCat("chat template: ", std::string(text.status().message())),
                                "messages");
  }
  return *std::move(text);
}

std::variant<std::shared_ptr<Generation>, ApiError> GenerationService::Start(
    const GenerationSpec& spec, EventSink sink) {
  if (shutting_down_) return ApiError::Unavailable("the server is shutting down");
  if (auto error = CheckModel(spec.model)) return *error;

  // Prompts -> token ids (chat: one rendered conversation).
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;  // for echo
  bool opens_reasoning = false;
  if (spec.chat) {
    auto rendered = RenderChat(spec.messages, ToolsActive(spec) ? spec.tools : nlohmann::ordered_json(),
                               spec.chat_template_kwargs, spec.add_generation_prompt);
    if (auto* error = std::get_if<ApiError>(&rendered)) return *error;
    const std::string& text = std::get<std::string>(rendered);
    opens_reasoning = PromptOpensReasoning(text);
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_.Encode(text, false);
    if (!ids.ok()) return ApiError::BadRequest(std::string(ids.status().message()), "messages");
    prompts.push_back(*std::move(ids));
    prompt_texts.push_back(text);
  } else {
    for (size_t i = 0; i < spec.prompts.size(); ++i) {
      const PromptInput& p = spec.prompts[i];
      if (p.kind == PromptKind::kTokens) {
        for (int32_t id : p.tokens) {
          if (id < 0 || id >= tokenizer_.vocab_size()) {
            return ApiError::BadRequest(
                absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                             tokenizer_.vocab_size(), ")"),
                "prompt");
          }
        }
        prompts.push_back(p.tokens);
        if (spec.echo) {
          absl::StatusOr<std::string> text = tokenizer_.Decode(p.tokens, true);
          prompt_texts.push_back(text.ok() ? *text : std::string());
        } else {
          prompt_texts.emplace_back();
        }
      } else {
        absl::StatusOr<std::vector<int32_t>> ids = tokenizer_.Encode(p.text, true);
        if (!ids.ok()) return ApiError::BadRequest(std::string(ids.status().message()), "prompt");
        prompts.push_back(*std::move(ids));
        prompt_texts.push_back(p.text);
      }
    }
  }
  if (prompts.empty()) return ApiError::BadRequest("the request has no prompt", spec.chat ? "messages" : "prompt");

  // Lengths: every prompt must leave room for its completion within the context.
  engine::SamplingParams params = spec.params;
  const std::string where = spec.chat ? "messages" : "prompt";
  size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) return ApiError::BadRequest("the prompt has no tokens", where);
    longest = std::max(longest, p.size());
  }
  const int64_t max_len = config_.max_model_len;
  if (static_cast<int64_t>(longest) >= max_len) {
    ApiError e = ApiError::BadRequest(
        absl::StrCat("This model's maximum context length is ", max_len,
                     " tokens. However, your prompt has ", longest,
                     " tokens, leaving no room for a completion. Please reduce the length of the ",
                     where, "."),
        where);
    e.code = "context_length_exceeded";
    return e;
  }
  if (!spec.max_tokens_set) {
    params.max_tokens = static_cast<int>(std::min<int64_t>(max_len - longest, INT32_MAX));
  } else if (static_cast<int64_t>(longest) + params.max_tokens > max_len) {
    ApiError e = ApiError::BadRequest(
        absl::StrCat("This model's maximum context length is ", max_len,
                     " tokens. However, you requested ", longest + params.max_tokens, " tokens (",
                     longest, " in the ", where, ", ", params.max_tokens,
                     " in the completion). Please reduce the length of the ", where,
                     " or completion."),
        where);
    e.code = "context_length_exceeded";
    return e;
  }
  const bool tools = ToolsActive(spec);
  if (tools) params.skip_special_tokens = false;
  if (!spec.want_logprobs) params.logprobs.reset();
  if (absl::Status s = params.Validate(tokenizer_.vocab_size()); !s.ok()) {
    return ApiError::BadRequest(std::string(s.message()));
  }
  std::vector<engine::Request> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests[i].prompt = std::move(prompts[i]);
    requests[i].params = params;
    if (absl::Status s = engine_.Validate(requests[i]); !s.ok()) {
      return ApiError::BadRequest(std::string(s.message()), where);
    }
  }
  if (engine_.gauges().waiting + static_cast<int64_t>(requests.size()) > config_.max_queue) {
    return ApiError::TooManyRequests(absl::StrCat(
        "the server's queue is full (", config_.max_queue, " requests waiting); retry later"));
  }

  auto generation = std::shared_ptr<Generation>(new Generation());
  generation->id_ = RandomId(spec.chat ? "chatcmpl-" : "cmpl-");
  generation->created_ = UnixSeconds();
  generation->engine_ = &engine_;
  generation->num_choices_ = static_cast<int>(requests.size()) * params.n;
  for (const auto& r : requests) generation->prompt_tokens_ += static_cast<int64_t>(r.prompt.size());

  auto state = std::make_shared<Generation::State>();
  state->sink = std::move(sink);
  state->metrics = metrics_;
  state->active = active_;
  state->n = params.n;
  state->prompts_left = static_cast<int>(requests.size());
  state->start = Clock::now();
  state->choices.resize(generation->num_choices_);
  for (int i = 0; i < generation->num_choices_; ++i) {
    ChoiceTranslator::Options o;
    o.reasoning = spec.chat;
    o.starts_in_reasoning = opens_reasoning;
    o.tools = tools;
    o.logprobs = spec.want_logprobs;
    if (!spec.chat && spec.echo) o.echo = prompt_texts[i / params.n];
    state->choices[i].translator = std::make_unique<ChoiceTranslator>(i, o, &tokenizer_);
  }

  {
    std::lock_guard<std::mutex> lock(live_mu_);
    if (live_.size() >= 1024) {
      std::erase_if(live_, [](const std::weak_ptr<Generation>& g) { return g.expired(); });
    }
    live_.push_back(generation);
  }
  active_->fetch_add(1);
  for (size_t i = 0; i < requests.size(); ++i) {
    const int prompt_index = static_cast<int>(i);
    absl::StatusOr<engine::RequestId> id = engine_.Submit(
        std::move(requests[i]),
        [state, prompt_index](const engine::RequestOutput& out) { state->OnOutput(prompt_index, out); });
    if (!id.ok()) {  // validated above: only a shutdown that began meanwhile lands here
      {
        std::lock_guard<std::mutex> lock(state->mu);
        state->sink = [](GenerationEvent&&) {};  // the caller gets the error instead
        state->prompts_left -= static_cast<int>(requests.size() - i);
        if (state->prompts_left == 0) active_->fetch_sub(1);  // no callback will finish it
      }
      generation->Cancel();
      return absl::IsFailedPrecondition(id.status())
                 ? ApiError::Unavailable(std::string(id.status().message()))
                 : ApiError::BadRequest(std::string(id.status().message()), where);
    }
    std::lock_guard<std::mutex> lock(generation->mu_);
    generation->engine_ids_.push_back(*id);
    if (generation->cancelled_) engine_.Cancel(*id);
  }
  return generation;
}

void GenerationService::CancelAll() {
  std::vector<std::shared_ptr<Generation>> live;
  {
    std::lock_guard<std::mutex> lock(live_mu_);
    for (const auto& weak : live_) {
      if (auto g = weak.lock()) live.push_back(std::move(g));
    }
  }
  for (const auto& g : live) g->Cancel();
}

std::variant<std::vector<int32_t>, ApiError> GenerationService::Tokenize(
    const TokenizeSpec& spec) const {
  if (auto error = CheckModel(spec.model)) return *error;
  std::string text = spec.prompt;
  if (spec.chat) {
    auto rendered = RenderChat(spec.messages, nlohmann::ordered_json(), spec.chat_template_kwargs,
                               spec.add_generation_prompt);
    if (auto* error = std::get_if<ApiError>(&rendered)) return *error;
    text = std::get<std::string>(rendered);
  }
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_.Encode(text, spec.add_special_tokens);
  if (!ids.ok()) return ApiError::BadRequest(std::string(ids.status().message()), "prompt");
  return *std::move(ids);
}

std::variant<std::string, ApiError> GenerationService::Detokenize(
    const DetokenizeSpec& spec) const {
  if (auto error = CheckModel(spec.model)) return *error;
  for (int32_t id : spec.tokens) {
    if (id < 0 || id >= tokenizer_.vocab_size()) {
      return ApiError::BadRequest(absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                               tokenizer_.vocab_size(), ")"),
                                  "tokens");
    }
  }
  absl::StatusOr<std::string> text = tokenizer_.Decode(spec.tokens, false);
  if (!text.ok()) return ApiError::BadRequest(std::string(text.status().message()), "tokens");
  return *std::move(text);
}

}  // namespace dserve::server
