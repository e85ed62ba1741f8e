// OpenAiRouter: the HTTP API — routes, Bearer auth, and the handlers of /v1/chat/completions,
// /v1/completions (whole responses or SSE streams), /v1/models, /tokenize, /detokenize,
// /health and /metrics. Requests become GenerationSpecs (openai_parse.h); results go out in
// OpenAI's shapes (openai_format.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "server/generation_service.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace dserve::server {

struct RouterConfig {
  std::string api_key;  // empty: no authentication
  int64_t created = 0;  // when the model was loaded (the /v1/models "created")
};

class OpenAiRouter {
 public:
  OpenAiRouter(GenerationService& service, ServerMetrics& metrics, RouterConfig config);

  void Handle(const HttpRequest& request, std::shared_ptr<ResponseChannel> channel);

 private:
  void Generate(const HttpRequest& request, bool chat, std::shared_ptr<ResponseChannel> channel);
  void Models(const HttpRequest& request, ResponseChannel& channel);
  void Tokenize(const HttpRequest& request, ResponseChannel& channel);
  void Detokenize(const HttpRequest& request, ResponseChannel& channel);
  void Error(ResponseChannel& channel, const ApiError& error);

  GenerationService& service_;
  ServerMetrics& metrics_;
  RouterConfig config_;
};

}  // namespace dserve::server
