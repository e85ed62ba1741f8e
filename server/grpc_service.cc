#include "server/grpc_service.h"

#include <algorithm>
#include <climits>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dserve/v1/dserve.grpc.pb.h"
#include "dserve/v1/dserve.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "server/openai_parse.h"

namespace dserve::server {
namespace {

using Json = nlohmann::ordered_json;

// Health reports this name too, so a client may ask for the service rather than the server.
constexpr char kServiceName[] = "dserve.v1.Dserve";

grpc::Status Unauthenticated() {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "missing or invalid API key: send metadata 'authorization: Bearer <key>'");
}

// Same length and a byte loop without early exit, so the time taken says nothing about how
// much of a guess was right.
bool SameSecret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Parses a JSON-text request field. The shape check comes first: nlohmann recurses per level
// (a hostile value must not exhaust a callback thread's stack), and ordered_json is quadratic
// in an object's members.
std::optional<ApiError> ParseJsonField(const std::string& text, const std::string& field,
                                       Json* out) {
  if (std::optional<ApiError> error = CheckJsonShape(text, field)) return error;
  // The value is placed up to two levels deep in the request body that the OpenAI parser
  // checks again (see ChatSpecFromProto); refusing here keeps the error naming the field.
  constexpr int kMaxDepth = kMaxJsonDepth - 2;
  if (JsonNestingDepth(text, kMaxDepth) > kMaxDepth) {
    return ApiError::BadRequest(
        absl::StrCat("'", field, "' is nested more than ", kMaxDepth, " levels deep"), field);
  }
  try {
    *out = Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return ApiError::BadRequest(
        absl::StrCat("'", field, "' is not valid JSON (error at byte ", e.byte, ")"), field);
  }
  return std::nullopt;
}

// The OpenAI parsers name JSON paths; a gRPC client wrote them inside a *_json text field, so
// the error names that field as well.
void NameProtoField(ApiError& error) {
  std::string field;
  if (absl::StartsWith(error.param, "tools")) {
    field = "tools_json";
  } else if (absl::StartsWith(error.param, "chat_template_kwargs")) {
    field = "chat_template_kwargs_json";
  } else if (absl::StartsWith(error.param, "messages[")) {
    const size_t pos = error.param.find(".tool_calls");
    if (pos != std::string::npos) field = error.param.substr(0, pos) + ".tool_calls_json";
  }
  if (field.empty()) return;
  error.message = absl::StrCat(field, ": ", error.message);
  error.param = std::move(field);
}

// Unset fields keep engine::SamplingParams' defaults; ranges are left to its Validate, which
// the service runs and which reports every problem at once. Only logprobs is checked here,
// because the spec's want_logprobs/top_logprobs are derived from it before validation.
std::optional<ApiError> ApplySampling(const v1::SamplingParams& in, GenerationSpec* spec) {
  engine::SamplingParams& p = spec->params;
  if (in.has_temperature()) p.temperature = in.temperature();
  if (in.has_top_p()) p.top_p = in.top_p();
  if (in.has_top_k()) p.top_k = in.top_k();
  if (in.has_min_p()) p.min_p = in.min_p();
  if (in.has_presence_penalty()) p.presence_penalty = in.presence_penalty();
  if (in.has_frequency_penalty()) p.frequency_penalty = in.frequency_penalty();
  if (in.has_repetition_penalty()) p.repetition_penalty = in.repetition_penalty();
  if (in.has_seed()) p.seed = in.seed();
  if (in.has_max_tokens()) {
    p.max_tokens = in.max_tokens();
    spec->max_tokens_set = true;
  }
  if (in.has_min_tokens()) p.min_tokens = in.min_tokens();
  p.stop.assign(in.stop().begin(), in.stop().end());
  p.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  if (in.has_ignore_eos()) p.ignore_eos = in.ignore_eos();
  if (in.has_n()) p.n = in.n();
  if (in.has_skip_special_tokens()) p.skip_special_tokens = in.skip_special_tokens();
  if (in.has_logprobs()) {
    if (in.logprobs() < 0 || in.logprobs() > 20) {
      return ApiError::BadRequest(absl::StrCat("logprobs must be in [0, 20], got ", in.logprobs()),
                                  "logprobs");
    }
    p.logprobs = in.logprobs();
    spec->want_logprobs = true;
    spec->top_logprobs = in.logprobs();
  }
  // A gRPC stream always ends with a Final carrying usage.
  spec->stream = true;
  spec->include_usage = true;
  return std::nullopt;
}

// The OpenAI JSON shape of the messages, for the shared validation in openai_parse.
std::variant<Json, ApiError> MessagesToJson(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages) {
  Json out = Json::array();
  for (int i = 0; i < messages.size(); ++i) {
    const v1::ChatMessage& m = messages[i];
    Json message = Json::object();
    message["role"] = m.role();
    if (m.has_content()) message["content"] = m.content();
    if (m.has_name()) message["name"] = m.name();
    if (m.has_tool_call_id()) message["tool_call_id"] = m.tool_call_id();
    if (!m.tool_calls_json().empty()) {
      Json calls;
      if (std::optional<ApiError> error = ParseJsonField(
              m.tool_calls_json(), absl::StrCat("messages[", i, "].tool_calls_json"), &calls)) {
        return *std::move(error);
      }
      message["tool_calls"] = std::move(calls);
    }
    if (m.has_reasoning_content()) message["reasoning_content"] = m.reasoning_content();
    out.push_back(std::move(message));
  }
  return out;
}

std::string DumpBody(const Json& body) {
  // Proto strings are valid UTF-8 already; replace rather than throw should that ever change.
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::variant<GenerationSpec, ApiError> GenerateSpecFromProto(const v1::GenerateRequest& request,
                                                             const GenerationService& service) {
  GenerationSpec spec;
  spec.chat = false;
  spec.model = request.model();
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      if (request.has_add_special_tokens() && !request.add_special_tokens()) {
        // The spec has no such switch (completions always add them), so tokenise here and
        // hand the service ids.
        TokenizeSpec tokenize;
        tokenize.model = request.model();
        tokenize.prompt = request.text();
        tokenize.add_special_tokens = false;
        auto ids = service.Tokenize(tokenize);
        if (auto* error = std::get_if<ApiError>(&ids)) return *std::move(error);
        spec.prompts.push_back(
            PromptInput{PromptKind::kTokens, {}, std::get<std::vector<int32_t>>(std::move(ids))});
      } else {
        spec.prompts.push_back(PromptInput{PromptKind::kText, request.text(), {}});
      }
      break;
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return ApiError::BadRequest("'token_ids' must not be empty", "token_ids");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0) {
          return ApiError::BadRequest(
              absl::StrCat("'token_ids[", i, "]' must be >= 0, got ", ids[i]), "token_ids");
        }
      }
      spec.prompts.push_back(PromptInput{PromptKind::kTokens, {}, {ids.begin(), ids.end()}});
      break;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      return ApiError::BadRequest("one of 'text' or 'token_ids' is required", "input");
  }
  if (std::optional<ApiError> error = ApplySampling(request.params(), &spec)) {
    return *std::move(error);
  }
  return spec;
}

// The chat fields go through the HTTP parser (as an OpenAI request body) so that both front
// ends accept and flatten messages, tools and tool_choice identically.
std::variant<GenerationSpec, ApiError> ChatSpecFromProto(const v1::ChatRequest& request) {
  Json body = Json::object();
  body["model"] = request.model();
  auto messages = MessagesToJson(request.messages());
  if (auto* error = std::get_if<ApiError>(&messages)) return *std::move(error);
  body["messages"] = std::get<Json>(std::move(messages));
  if (!request.tools_json().empty()) {
    Json tools;
    if (auto error = ParseJsonField(request.tools_json(), "tools_json", &tools)) {
      return *std::move(error);
    }
    body["tools"] = std::move(tools);
  }
  const std::string& choice = request.tool_choice();
  if (choice == "auto" || choice == "none" || choice == "required") {
    body["tool_choice"] = choice;
  } else if (!choice.empty()) {
    body["tool_choice"] = Json{{"type", "function"}, {"function", Json{{"name", choice}}}};
  }
  if (!request.chat_template_kwargs_json().empty()) {
    Json kwargs;
    if (auto error = ParseJsonField(request.chat_template_kwargs_json(),
                                    "chat_template_kwargs_json", &kwargs)) {
      return *std::move(error);
    }
    body["chat_template_kwargs"] = std::move(kwargs);
  }
  if (request.has_add_generation_prompt()) {
    body["add_generation_prompt"] = request.add_generation_prompt();
  }
  ParsedRequest parsed = ParseChatCompletionRequest(DumpBody(body));
  if (!parsed.ok()) {
    NameProtoField(parsed.error);
    return std::move(parsed.error);
  }
  GenerationSpec spec = *std::move(parsed.spec);
  if (std::optional<ApiError> error = ApplySampling(request.params(), &spec)) {
    return *std::move(error);
  }
  return spec;
}

std::variant<TokenizeSpec, ApiError> TokenizeSpecFromProto(const v1::TokenizeRequest& request) {
  if (request.messages().empty()) {
    TokenizeSpec spec;
    spec.model = request.model();
    spec.prompt = request.text();
    spec.add_special_tokens = !request.has_add_special_tokens() || request.add_special_tokens();
    return spec;
  }
  if (!request.text().empty()) {
    return ApiError::BadRequest("give either 'text' or 'messages', not both", "messages");
  }
  Json body = Json::object();
  body["model"] = request.model();
  auto messages = MessagesToJson(request.messages());
  if (auto* error = std::get_if<ApiError>(&messages)) return *std::move(error);
  body["messages"] = std::get<Json>(std::move(messages));
  if (request.has_add_generation_prompt()) {
    body["add_generation_prompt"] = request.add_generation_prompt();
  }
  if (!request.chat_template_kwargs_json().empty()) {
    Json kwargs;
    if (auto error = ParseJsonField(request.chat_template_kwargs_json(),
                                    "chat_template_kwargs_json", &kwargs)) {
      return *std::move(error);
    }
    body["chat_template_kwargs"] = std::move(kwargs);
  }
  if (request.has_add_special_tokens()) body["add_special_tokens"] = request.add_special_tokens();
  auto parsed = ParseTokenizeRequest(DumpBody(body));
  if (auto* error = std::get_if<ApiError>(&parsed)) {
    NameProtoField(*error);
    return *std::move(error);
  }
  return parsed;
}

void FillLogprob(const TokenLogprob& in, v1::TokenLogprob* out) {
  out->set_token_id(in.id);
  out->set_token(in.token);
  out->set_bytes(in.bytes);
  out->set_logprob(in.logprob);
  for (const TopLogprob& top : in.top) {
    v1::TopLogprob* t = out->add_top_logprobs();
    t->set_token_id(top.id);
    t->set_token(top.token);
    t->set_bytes(top.bytes);
    t->set_logprob(top.logprob);
  }
}

bool HasNews(const ChoiceDelta& c) {
  return !c.token_ids.empty() || !c.content.empty() || !c.reasoning.empty() ||
         !c.tool_calls.empty() || !c.logprobs.empty() || c.finish_reason.has_value();
}

// One event becomes one Delta per choice with news, then the Final once all have finished.
// `finish_reasons` accumulates across the generation's events.
void ConvertEvent(GenerationEvent& event, std::map<int, std::string>& finish_reasons,
                  std::vector<v1::GenerateResponse>* out) {
  for (ChoiceDelta& c : event.choices) {
    if (c.finish_reason) finish_reasons[c.index] = *c.finish_reason;
    if (!HasNews(c)) continue;
    v1::Delta* d = out->emplace_back().mutable_delta();
    d->set_index(c.index);
    d->mutable_token_ids()->Add(c.token_ids.begin(), c.token_ids.end());
    d->set_text(std::move(c.content));
    d->set_reasoning(std::move(c.reasoning));
    for (ToolCallParser::Delta::CallDelta& call : c.tool_calls) {
      v1::ToolCallDelta* t = d->add_tool_calls();
      t->set_index(call.index);
      t->set_id(std::move(call.id));
      t->set_name(std::move(call.name));
      t->set_arguments(std::move(call.arguments));
    }
    for (const TokenLogprob& lp : c.logprobs) FillLogprob(lp, d->add_logprobs());
    if (c.finish_reason) d->set_finish_reason(*c.finish_reason);
  }
  if (!event.finished || !event.error.empty()) return;
  v1::Final* f = out->emplace_back().mutable_final();
  for (const auto& [index, reason] : finish_reasons) {
    v1::ChoiceFinal* choice = f->add_choices();
    choice->set_index(index);
    choice->set_finish_reason(reason);
  }
  v1::Usage* usage = f->mutable_usage();
  usage->set_prompt_tokens(event.usage.prompt_tokens);
  usage->set_completion_tokens(event.usage.completion_tokens);
  usage->set_cached_prompt_tokens(event.usage.cached_prompt_tokens);
}

class GenerateReactor;

// A message waiting to be written, with its serialized size as counted against the cap.
struct Queued {
  v1::GenerateResponse message;
  size_t bytes = 0;
};

// What the engine-thread sink and the reactor share. The sink holds it by shared_ptr, never
// the reactor itself: the engine may deliver events after the call is over and the reactor
// deleted, and then finds reactor == nullptr.
struct StreamState {
  explicit StreamState(size_t max_pending_bytes) : max_pending_bytes(max_pending_bytes) {}

  std::mutex mu;
  GenerateReactor* reactor = nullptr;  // null once OnDone ran
  std::shared_ptr<Generation> generation;
  // Begin has returned from GenerationService::Start (or the call was refused). Writing waits
  // for it so that the Final can carry the generation's id, whenever the events arrive.
  bool started = false;
  std::deque<Queued> pending;
  size_t pending_bytes = 0;  // the sum of pending[i].bytes
  const size_t max_pending_bytes;
  // How the call ends, once known; nothing is queued after that.
  std::optional<grpc::Status> outcome;
  // The outcome was decided before the generation ended (a cancel, a broken stream, a client
  // that does not read): the generation must be cancelled, by Begin if it has no handle yet.
  bool cancel_generation = false;
  bool writing = false;   // a StartWrite is outstanding
  bool finished = false;  // Finish was called
  // Touched only by the sink, which the service calls in order on the engine thread.
  std::map<int, std::string> finish_reasons;

  void ClearPending() {
    pending.clear();
    pending_bytes = 0;
  }

  // Under `mu`, with no outcome yet: the call ends with `status` once no write is outstanding,
  // and what is queued is dropped. Returns the generation for the caller to cancel once it has
  // released `mu` (null until Begin has it; Begin then cancels it).
  std::shared_ptr<Generation> EndEarly(grpc::Status status) {
    ClearPending();
    outcome = std::move(status);
    cancel_generation = true;
    return generation;
  }
};

// One Generate/Chat call. At most one write is outstanding: whoever sets `writing` (the sink,
// OnWriteDone, or Begin) issues the StartWrite; Finish is issued the same way once the queue is
// empty and the outcome known, so StartWrite and Finish never race and OnDone (which only
// follows Finish) never overlaps a sink that is touching the reactor.
class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit GenerateReactor(size_t max_pending_bytes)
      : state_(std::make_shared<StreamState>(max_pending_bytes)) {
    state_->reactor = this;
  }

  // Ends the call with `status` and nothing written.
  void Fail(grpc::Status status) {
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->started = true;
    if (!state_->outcome) state_->outcome = std::move(status);
    Advance(std::move(lock));
  }

  void Begin(GenerationService& service, const GenerationSpec& spec) {
    std::shared_ptr<StreamState> state = state_;
    // Start may already call the sink (on the engine thread) before it returns; the sink
    // queues and waits for `started`.
    auto result =
        service.Start(spec, [state](GenerationEvent&& event) { Deliver(state, std::move(event)); });
    std::unique_lock<std::mutex> lock(state->mu);
    state->started = true;
    std::shared_ptr<Generation> to_cancel;
    if (auto* error = std::get_if<ApiError>(&result)) {
      state->ClearPending();
      if (!state->outcome) state->outcome = ToGrpcStatus(*error);
    } else {
      state->generation = std::get<std::shared_ptr<Generation>>(std::move(result));
      // The sink may have run out of room while Start was still submitting.
      if (state->cancel_generation) to_cancel = state->generation;
    }
    Advance(std::move(lock));  // `this` may be gone from here on
    if (to_cancel) to_cancel->Cancel();
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->writing = false;
    std::shared_ptr<Generation> to_cancel;
    if (!ok && !state_->outcome) {
      // The stream broke (the client is gone): nothing more can be delivered.
      to_cancel =
          state_->EndEarly(grpc::Status(grpc::StatusCode::CANCELLED, "the stream was closed"));
    }
    Advance(std::move(lock));  // `this` may be gone from here on
    if (to_cancel) to_cancel->Cancel();
  }

  // The client cancelled, the deadline passed, or the server is shutting down.
  void OnCancel() override {
    std::unique_lock<std::mutex> lock(state_->mu);
    std::shared_ptr<Generation> to_cancel;
    if (!state_->outcome) {
      to_cancel =
          state_->EndEarly(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
    }
    Advance(std::move(lock));  // `this` may be gone from here on
    // Outside the lock: Cancel takes the generation's and the engine's locks, and no lock is
    // to be held while taking them.
    if (to_cancel) to_cancel->Cancel();
  }

  void OnDone() override {
    std::shared_ptr<Generation> generation;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->reactor = nullptr;
      state_->ClearPending();
      // The generation keeps the sink, which keeps the state: break the cycle.
      generation = std::move(state_->generation);
    }
    generation.reset();
    delete this;
  }

 private:
  // Engine thread; must not block (the lock is only held for queue updates and by peers
  // doing the same).
  static void Deliver(const std::shared_ptr<StreamState>& state, GenerationEvent&& event) {
    std::vector<v1::GenerateResponse> messages;
    ConvertEvent(event, state->finish_reasons, &messages);
    std::vector<size_t> sizes;
    size_t bytes = 0;
    for (const v1::GenerateResponse& m : messages) bytes += sizes.emplace_back(m.ByteSizeLong());
    std::unique_lock<std::mutex> lock(state->mu);
    if (state->reactor == nullptr || state->outcome) return;
    // An empty queue always takes the event: a client that keeps up is never cut off, however
    // large one event is (its messages are still bounded by max_message_bytes).
    if (!state->pending.empty() && state->pending_bytes + bytes > state->max_pending_bytes) {
      std::shared_ptr<Generation> to_cancel = state->EndEarly(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       "the client is not reading its stream; generation cancelled"));
      // Finishes now, or from OnWriteDone if a write is outstanding.
      state->reactor->Advance(std::move(lock));
      // Outside the lock, like OnCancel. The engine calls sinks outside its own lock, so its
      // thread may cancel the generation it is delivering for.
      if (to_cancel) to_cancel->Cancel();
      return;
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      state->pending.push_back(Queued{std::move(messages[i]), sizes[i]});
    }
    state->pending_bytes += bytes;
    if (event.finished) {
      state->outcome = event.error.empty() ? grpc::Status::OK
                                           : grpc::Status(grpc::StatusCode::INTERNAL, event.error);
    }
    state->reactor->Advance(std::move(lock));
  }

  // Starts the next write or the Finish if nobody else is; releases `lock` before calling
  // into gRPC, after which `this` must not be touched (OnWriteDone or OnDone may already be
  // running on another thread).
  void Advance(std::unique_lock<std::mutex> lock) {
    StreamState& s = *state_;
    if (!s.started || s.writing || s.finished) return;
    if (!s.pending.empty()) {
      current_ = std::move(s.pending.front().message);
      s.pending_bytes -= s.pending.front().bytes;
      s.pending.pop_front();
      if (current_.has_final() && s.generation != nullptr) {
        current_.mutable_final()->set_id(s.generation->id());
      }
      s.writing = true;
      lock.unlock();
      StartWrite(&current_);
      return;
    }
    if (s.outcome) {
      s.finished = true;
      grpc::Status status = *s.outcome;
      lock.unlock();
      Finish(status);
    }
  }

  std::shared_ptr<StreamState> state_;
  v1::GenerateResponse current_;  // the message being written; owned by whoever set `writing`
};

}  // namespace

grpc::Status ToGrpcStatus(const ApiError& error) {
  auto code = [](int http_status) {
    switch (http_status) {
      case 400:
      case 413:
        return grpc::StatusCode::INVALID_ARGUMENT;
      case 401:
        return grpc::StatusCode::UNAUTHENTICATED;
      case 403:
        return grpc::StatusCode::PERMISSION_DENIED;
      case 404:
        return grpc::StatusCode::NOT_FOUND;
      case 429:
        return grpc::StatusCode::RESOURCE_EXHAUSTED;
      case 503:
        return grpc::StatusCode::UNAVAILABLE;
      default:
        return grpc::StatusCode::INTERNAL;
    }
  };
  return grpc::Status(code(error.http_status), error.message);
}

// Unary calls run on the callback thread that received them: tokenising is CPU work of the
// size of the request, not a wait, so it needs no hand-off.
class DserveGrpcService final : public v1::Dserve::CallbackService {
 public:
  DserveGrpcService(GenerationService& service, std::string api_key, size_t max_pending_bytes)
      : service_(service), api_key_(std::move(api_key)), max_pending_bytes_(max_pending_bytes) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override {
    auto* reactor = new GenerateReactor(max_pending_bytes_);
    if (!Authorized(*context)) {
      reactor->Fail(Unauthenticated());
      return reactor;
    }
    auto spec = GenerateSpecFromProto(*request, service_);
    if (auto* error = std::get_if<ApiError>(&spec)) {
      reactor->Fail(ToGrpcStatus(*error));
    } else {
      reactor->Begin(service_, std::get<GenerationSpec>(spec));
    }
    return reactor;
  }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const v1::ChatRequest* request) override {
    auto* reactor = new GenerateReactor(max_pending_bytes_);
    if (!Authorized(*context)) {
      reactor->Fail(Unauthenticated());
      return reactor;
    }
    auto spec = ChatSpecFromProto(*request);
    if (auto* error = std::get_if<ApiError>(&spec)) {
      reactor->Fail(ToGrpcStatus(*error));
    } else {
      reactor->Begin(service_, std::get<GenerationSpec>(spec));
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish([&]() -> grpc::Status {
      if (!Authorized(*context)) return Unauthenticated();
      auto spec = TokenizeSpecFromProto(*request);
      if (auto* error = std::get_if<ApiError>(&spec)) return ToGrpcStatus(*error);
      auto ids = service_.Tokenize(std::get<TokenizeSpec>(spec));
      if (auto* error = std::get_if<ApiError>(&ids)) return ToGrpcStatus(*error);
      const auto& tokens = std::get<std::vector<int32_t>>(ids);
      response->mutable_token_ids()->Add(tokens.begin(), tokens.end());
      response->set_count(static_cast<int32_t>(tokens.size()));
      response->set_max_model_len(service_.config().max_model_len);
      return grpc::Status::OK;
    }());
    return reactor;
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish([&]() -> grpc::Status {
      if (!Authorized(*context)) return Unauthenticated();
      DetokenizeSpec spec;
      spec.model = request->model();
      spec.tokens.assign(request->token_ids().begin(), request->token_ids().end());
      auto text = service_.Detokenize(spec);
      if (auto* error = std::get_if<ApiError>(&text)) return ToGrpcStatus(*error);
      // A proto3 string must be UTF-8 (the client's parser refuses anything else), and ids
      // cut anywhere may end inside a character.
      response->set_text(TokenText(std::get<std::string>(text)));
      return grpc::Status::OK;
    }());
    return reactor;
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* /*request*/,
                                       v1::ListModelsResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (!Authorized(*context)) {
      reactor->Finish(Unauthenticated());
      return reactor;
    }
    v1::ModelInfo* model = response->add_models();
    model->set_id(service_.config().served_model_name);
    model->set_max_model_len(service_.config().max_model_len);
    model->set_owned_by("dserve");
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  bool Authorized(const grpc::CallbackServerContext& context) const {
    if (api_key_.empty()) return true;
    const auto& metadata = context.client_metadata();
    const auto it = metadata.find("authorization");
    if (it == metadata.end()) return false;
    const std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kScheme = "bearer ";
    if (value.size() < kScheme.size() ||
        !absl::EqualsIgnoreCase(std::string(value.substr(0, kScheme.size())),
                                std::string(kScheme))) {
      return false;
    }
    return SameSecret(value.substr(kScheme.size()), api_key_);
  }

  GenerationService& service_;
  const std::string api_key_;
  const size_t max_pending_bytes_;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(GenerationService& service,
                                                              const Options& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("gRPC port must be in [0, 65535], got ", options.port));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gRPC max_message_bytes must be > 0, got ", options.max_message_bytes));
  }
  if (options.max_pending_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gRPC max_pending_bytes must be > 0, got ", options.max_pending_bytes));
  }
  // An IPv6 literal needs brackets to be told from the port.
  const bool bracket =
      options.host.find(':') != std::string::npos && !absl::StartsWith(options.host, "[");
  const std::string address = bracket ? absl::StrCat("[", options.host, "]:", options.port)
                                      : absl::StrCat(options.host, ":", options.port);

  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<DserveGrpcService>(
      service, options.api_key, static_cast<size_t>(options.max_pending_bytes));

  // Both take effect for servers built from here on.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, so a second server on a taken port would bind too and
  // silently share its traffic; a taken port must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  const int max_bytes = static_cast<int>(std::min<int64_t>(options.max_message_bytes, INT_MAX));
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    // Leaves nothing running (the destructor shuts down whatever was built).
    return absl::UnavailableError(absl::StrCat("gRPC server could not listen on ", address));
  }
  if (grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService()) {
    health->SetServingStatus(kServiceName, true);
  }
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::BeginDrain() {
  if (server_ == nullptr) return;
  // Setting a status is idempotent, and ignored once the health service has shut down.
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus("", false);
    health->SetServingStatus(kServiceName, false);
  }
}

void GrpcServer::Shutdown(std::chrono::milliseconds deadline) {
  std::call_once(shutdown_once_, [&] {
    if (server_ == nullptr) return;
    // Load balancers polling health stop sending calls before the port closes.
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();
    }
    server_->Shutdown(std::chrono::system_clock::now() + deadline);
    server_->Wait();
  });
}

}  // namespace dserve::server
