#include "server/openai_routes.h"

#include <cctype>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/openai_format.h"
#include "server/openai_parse.h"

namespace dserve::server {
namespace {

using json = nlohmann::json;

constexpr const char* kJson = "application/json";

std::string Dump(const json& j) {
  // Invalid UTF-8 cannot reach here (token texts are sanitised), but never throw on it.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseEvent(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

// "Bearer <key>" (the scheme in any case), compared in time independent of where it differs.
bool Authorized(std::string_view header, const std::string& key) {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() < kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != kScheme[i]) return false;
  }
  const std::string_view given = header.substr(kScheme.size());
  unsigned diff = given.size() != key.size();
  for (size_t i = 0; i < key.size(); ++i) {
    diff |= static_cast<unsigned char>(key[i]) ^
            static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  }
  return diff == 0;
}

// One generation's stream, formatted on the connection's strand (never on the engine thread).
struct StreamState {
  std::shared_ptr<ResponseChannel> channel;
  ResponseHeader header;
  bool include_usage = false;
  std::vector<int64_t> text_offsets;  // completions' logprob offsets, per choice

  void OnEvent(const GenerationEvent& e) {
    std::string out;
    for (const ChoiceDelta& d : e.choices) {
      const bool empty = d.content.empty() && d.reasoning.empty() && d.tool_calls.empty() &&
                         d.logprobs.empty() && !d.finish_reason;
      if (empty) continue;
      if (auto fast = FastDeltaChunk(header, d, include_usage)) {
        TokenOffsets(d, &text_offsets[d.index]);  // keeps the running text length right
        absl::StrAppend(&out, "data: ", *fast, "\n\n");
      } else {
        out += SseEvent(DeltaChunk(header, d, include_usage, &text_offsets[d.index]));
      }
    }
    if (e.finished) {
      if (!e.error.empty()) {
        ApiError error = ApiError::Internal(absl::StrCat("generation failed: ", e.error));
        out += SseEvent(error.ToJson());
      }
      if (include_usage) out += SseEvent(UsageChunk(header, e.usage));
      out += "data: [DONE]\n\n";
    }
    if (!out.empty()) channel->StreamChunk(std::move(out));
    if (e.finished) channel->EndStream();
  }
};

// One non-streaming generation, accumulated on the connection's strand.
struct WholeState {
  std::shared_ptr<ResponseChannel> channel;
  ResponseBuilder builder;
  WholeState(std::shared_ptr<ResponseChannel> ch, ResponseHeader h, int choices, bool logprobs)
      : channel(std::move(ch)), builder(std::move(h), choices, logprobs) {}

  void OnEvent(const GenerationEvent& e) {
    for (const ChoiceDelta& d : e.choices) builder.Add(d);
    if (!e.finished) return;
    if (!e.error.empty()) {
      ApiError error = ApiError::Internal(absl::StrCat("generation failed: ", e.error));
      channel->Respond(error.http_status, kJson, Dump(error.ToJson()));
      return;
    }
    channel->Respond(200, kJson, Dump(builder.Build(e.usage)));
  }
};

}  // namespace

OpenAiRouter::OpenAiRouter(GenerationService& service, ServerMetrics& metrics,
                           RouterConfig config)
    : service_(service), metrics_(metrics), config_(std::move(config)) {}

void OpenAiRouter::Error(ResponseChannel& channel, const ApiError& error) {
  metrics_.RequestRejected(error.http_status);
  HeaderList headers;
  if (error.http_status == 429) headers.emplace_back("Retry-After", "1");
  if (error.http_status == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
  channel.Respond(error.http_status, kJson, Dump(error.ToJson()), std::move(headers));
}

void OpenAiRouter::Handle(const HttpRequest& request, std::shared_ptr<ResponseChannel> channel) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  if (path == "/health" || path == "/v1/health") {
    if (method != "GET" && method != "HEAD") {
      return Error(*channel, ApiError{405, "use GET /health", "invalid_request_error", "", ""});
    }
    if (!service_.healthy()) {
      return Error(*channel, ApiError::Unavailable("the engine is unhealthy or shutting down"));
    }
    return channel->Respond(200, kJson, "{}");
  }
  if (!config_.api_key.empty() && !Authorized(request.Header("authorization"), config_.api_key)) {
    return Error(*channel, ApiError::Unauthorized(
                               "missing or wrong API key: send 'Authorization: Bearer <key>'"));
  }
  struct Route {
    const char* path;
    const char* method;
  };
  static constexpr Route kRoutes[] = {
      {"/v1/chat/completions", "POST"}, {"/v1/completions", "POST"}, {"/v1/models", "GET"},
      {"/tokenize", "POST"},            {"/detokenize", "POST"},     {"/metrics", "GET"},
  };
  const bool model_by_id = path.rfind("/v1/models/", 0) == 0;
  const Route* route = nullptr;
  for (const Route& r : kRoutes) {
    if (path == r.path) route = &r;
  }
  if (!route && !model_by_id) {
    return Error(*channel, ApiError{404, absl::StrCat("no route for ", method, " ", path),
                                    "invalid_request_error", "", "not_found"});
  }
  const char* want = route ? route->method : "GET";
  if (method != want) {
    return Error(*channel, ApiError{405, absl::StrCat("use ", want, " ", path),
                                    "invalid_request_error", "", "method_not_allowed"});
  }
  if (path == "/v1/chat/completions") return Generate(request, true, std::move(channel));
  if (path == "/v1/completions") return Generate(request, false, std::move(channel));
  if (path == "/tokenize") return Tokenize(request, *channel);
  if (path == "/detokenize") return Detokenize(request, *channel);
  if (path == "/metrics") {
    return channel->Respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics_.Render());
  }
  return Models(request, *channel);
}

void OpenAiRouter::Models(const HttpRequest& request, ResponseChannel& channel) {
  const ServiceConfig& c = service_.config();
  json card = {{"id", c.served_model_name}, {"object", "model"},
               {"created", config_.created}, {"owned_by", "dserve"},
               {"root", c.model_dir},         {"parent", nullptr},
               {"max_model_len", c.max_model_len}};
  if (request.path == "/v1/models") {
    json list = {{"object", "list"}, {"data", json::array({card})}};
    return channel.Respond(200, kJson, Dump(list));
  }
  const std::string id = request.path.substr(std::string("/v1/models/").size());
  if (id != c.served_model_name) {
    return Error(channel, ApiError::NotFound(absl::StrCat("The model `", id, "` does not exist"),
                                             "model"));
  }
  channel.Respond(200, kJson, Dump(card));
}

void OpenAiRouter::Tokenize(const HttpRequest& request, ResponseChannel& channel) {
  auto parsed = ParseTokenizeRequest(request.body);
  if (auto* error = std::get_if<ApiError>(&parsed)) return Error(channel, *error);
  auto ids = service_.Tokenize(std::get<TokenizeSpec>(parsed));
  if (auto* error = std::get_if<ApiError>(&ids)) return Error(channel, *error);
  const auto& tokens = std::get<std::vector<int32_t>>(ids);
  json out = {{"count", tokens.size()},
              {"max_model_len", service_.config().max_model_len},
              {"tokens", tokens}};
  channel.Respond(200, kJson, Dump(out));
}

void OpenAiRouter::Detokenize(const HttpRequest& request, ResponseChannel& channel) {
  auto parsed = ParseDetokenizeRequest(request.body);
  if (auto* error = std::get_if<ApiError>(&parsed)) return Error(channel, *error);
  auto text = service_.Detokenize(std::get<DetokenizeSpec>(parsed));
  if (auto* error = std::get_if<ApiError>(&text)) return Error(channel, *error);
  channel.Respond(200, kJson, Dump(json{{"prompt", std::get<std::string>(text)}}));
}

void OpenAiRouter::Generate(const HttpRequest& request, bool chat,
                            std::shared_ptr<ResponseChannel> channel) {
  ParsedRequest parsed =
      chat ? ParseChatCompletionRequest(request.body) : ParseCompletionRequest(request.body);
  if (!parsed.ok()) return Error(*channel, parsed.error);
  const GenerationSpec& spec = *parsed.spec;

  // The sink runs on the engine thread: it only hands the event to the connection's strand.
  // Handlers run on that strand too, so an event handed off while Start returns runs after
  // this function, by when `dispatch` is set and the stream's head is queued before it.
  auto dispatch = std::make_shared<std::function<void(const GenerationEvent&)>>();
  EventSink sink = [channel, dispatch](GenerationEvent&& e) {
    channel->Run([dispatch, e = std::move(e)] { (*dispatch)(e); });
  };
  auto started = service_.Start(spec, std::move(sink));
  if (auto* error = std::get_if<ApiError>(&started)) return Error(*channel, *error);
  std::shared_ptr<Generation> generation = std::get<std::shared_ptr<Generation>>(started);

  ResponseHeader header{generation->id(), generation->created(),
                        spec.model.empty() ? service_.config().served_model_name : spec.model,
                        chat};
  if (spec.stream) {
    auto stream = std::make_shared<StreamState>();
    stream->channel = channel;
    stream->header = header;
    stream->include_usage = spec.include_usage;
    stream->text_offsets.assign(generation->num_choices(), 0);
    channel->StartStream("text/event-stream");
    if (chat) {
      std::string roles;
      for (int i = 0; i < generation->num_choices(); ++i) {
        roles += SseEvent(ChatRoleChunk(header, i, spec.include_usage));
      }
      channel->StreamChunk(std::move(roles));
    }
    *dispatch = [stream](const GenerationEvent& e) { stream->OnEvent(e); };
  } else {
    auto whole = std::make_shared<WholeState>(channel, header, generation->num_choices(),
                                              spec.want_logprobs);
    *dispatch = [whole](const GenerationEvent& e) { whole->OnEvent(e); };
  }
  channel->OnClientGone([generation] { generation->Cancel(); });
}

}  // namespace dserve::server
