// dserve serve: loads a checkpoint, starts the engine, and serves the OpenAI-compatible HTTP
// API and the gRPC API until SIGINT/SIGTERM; then drains (new requests get 503), cancels what
// is still running after --shutdown-timeout, and exits 0.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <pthread.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/flags.h"
#include "cli/model_session.h"
#include "core/check.h"
#include "engine/chat/chat_template.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/generation_service.h"
#include "server/grpc_service.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_routes.h"

namespace dserve::cli {
namespace {

using std::chrono::milliseconds;

std::vector<FlagSpec> ServeFlags() {
  std::vector<FlagSpec> specs = ModelFlags();
  for (FlagSpec& f : EngineFlags()) specs.push_back(std::move(f));
  specs.push_back({"host", "address to listen on", "127.0.0.1"});
  specs.push_back({"port", "HTTP port (0: any free port)", "8000"});
  specs.push_back({"grpc-port", "gRPC port (0: no gRPC server)", "50051"});
  specs.push_back({"served-model-name", "the model name clients use (default: the folder name)", ""});
  specs.push_back({"api-key", "require 'Authorization: Bearer <key>' (all routes but /health)", ""});
  specs.push_back({"max-queue", "requests waiting for admission beyond which new ones get 429", "1024"});
  specs.push_back({"shutdown-timeout", "seconds in-flight requests get to finish on SIGTERM", "30"});
  specs.push_back({"http-threads", "HTTP I/O threads", "2"});
  specs.push_back({"max-body-mb", "largest request body accepted (MiB; larger: 413)", "8"});
  specs.push_back({"read-timeout-ms", "a request must arrive within this (slow clients are dropped)", "30000"});
  return specs;
}

absl::Status Serve(const Flags& flags) {
  // Signals are taken by sigwait below: block them before any thread starts, so every thread
  // inherits the mask and none is interrupted.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  DSERVE_ASSIGN_OR_RETURN(const int64_t port, flags.GetInt("port", 0, 65535));
  DSERVE_ASSIGN_OR_RETURN(const int64_t grpc_port, flags.GetInt("grpc-port", 0, 65535));
  DSERVE_ASSIGN_OR_RETURN(const int64_t max_queue, flags.GetInt("max-queue", 0, 1 << 30));
  DSERVE_ASSIGN_OR_RETURN(const int64_t shutdown_s, flags.GetInt("shutdown-timeout", 0, 86400));
  DSERVE_ASSIGN_OR_RETURN(const int64_t http_threads, flags.GetInt("http-threads", 1, 256));
  DSERVE_ASSIGN_OR_RETURN(const int64_t max_body_mb, flags.GetInt("max-body-mb", 1, 1024));
  DSERVE_ASSIGN_OR_RETURN(const int64_t read_timeout_ms,
                          flags.GetInt("read-timeout-ms", 1, 3600 * 1000));
  const std::string model_dir = flags.Get("model");

  DSERVE_ASSIGN_OR_RETURN(ModelSession session, OpenModel(flags));
  if (!session.model) return FollowOnly("serve", session);
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tokenizer,
                          engine::LoadTokenizer(model_dir));
  std::optional<engine::ChatTemplate> chat_template;
  if (auto t = engine::ChatTemplate::FromModelDir(model_dir); t.ok()) {
    chat_template = *std::move(t);
  } else {
    std::fprintf(stderr, "dserve serve: no chat template (%s); /v1/chat/completions will answer 400\n",
                 std::string(t.status().message()).c_str());
  }
  DSERVE_ASSIGN_OR_RETURN(engine::EngineConfig config, ParseEngineConfig(flags, session));
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::EngineCore> core,
                          engine::EngineCore::Create(*session.model, tokenizer.get(), config));
  const models::ModelConfig& mc = session.model->config();
  const int64_t kv_tokens = core->num_pages() * core->page_size();
  engine::Engine engine(std::move(core));

  server::ServiceConfig service_config;
  service_config.served_model_name = flags.Get("served-model-name");
  if (service_config.served_model_name.empty()) {
    service_config.served_model_name =
        std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (service_config.served_model_name.empty()) {
      service_config.served_model_name =
          std::filesystem::path(model_dir).lexically_normal().parent_path().filename().string();
    }
  }
  service_config.model_dir = model_dir;
  service_config.max_queue = max_queue;
  service_config.max_model_len = std::min<int64_t>(mc.max_position_embeddings, kv_tokens);

  server::ServerMetrics metrics(server::ServerMetricsOptions{service_config.served_model_name});
  const models::ExpertLoad& load = session.model->expert_load();
  const int drafts = config.num_speculative_tokens;
  const int ep_size = session.model->parallel().ep_size;
  metrics.SetEngineStateSource([&engine, &load, drafts, ep_size] {
    const engine::EngineGauges g = engine.gauges();
    server::EngineState s;
    s.num_running = g.running;
    s.num_waiting = g.waiting;
    s.kv_pages_used = g.kv_used_pages;
    s.kv_pages_total = g.kv_total_pages;
    s.num_preemptions = g.preemptions;
    const engine::EngineStats stats = engine.stats();
    s.verifications = stats.verifications;
    s.draft_tokens = stats.draft_tokens;
    s.accepted_draft_tokens = stats.accepted_draft_tokens;
    s.accepted_at.assign(stats.accepted_at.begin(),
                         stats.accepted_at.begin() + drafts);
    s.expert_tokens = load.Snapshot();
    s.expert_layers = load.layers();
    s.ep_size = ep_size;
    return s;
  });
  server::GenerationService service(engine, *tokenizer,
                                    chat_template ? &*chat_template : nullptr, &metrics,
                                    service_config);
  server::OpenAiRouter router(service, metrics,
                              server::RouterConfig{flags.Get("api-key"),
                                                   static_cast<int64_t>(std::time(nullptr))});

  server::HttpOptions http_options;
  http_options.host = flags.Get("host");
  http_options.port = static_cast<int>(port);
  http_options.threads = static_cast<int>(http_threads);
  http_options.max_body_bytes = static_cast<size_t>(max_body_mb) << 20;
  http_options.read_timeout = milliseconds(read_timeout_ms);
  DSERVE_ASSIGN_OR_RETURN(
      std::unique_ptr<server::HttpServer> http,
      server::HttpServer::Start(
          [&router](const server::HttpRequest& r, std::shared_ptr<server::ResponseChannel> c) {
            router.Handle(r, std::move(c));
          },
          http_options));
  std::unique_ptr<server::GrpcServer> grpc;
  if (grpc_port != 0) {
    server::GrpcServer::Options grpc_options;
    grpc_options.host = http_options.host;
    grpc_options.port = static_cast<int>(grpc_port);
    grpc_options.api_key = flags.Get("api-key");
    DSERVE_ASSIGN_OR_RETURN(grpc, server::GrpcServer::Start(service, grpc_options));
  }

  std::printf("dserve serve: model %s (%s, %d layers, vocab %lld) as \"%s\"\n", model_dir.c_str(),
              mc.model_type.c_str(), mc.num_hidden_layers, static_cast<long long>(mc.vocab_size),
              service_config.served_model_name.c_str());
  std::printf("dserve serve: KV cache %lld tokens (%lld pages of %lld); max_model_len %lld\n",
              static_cast<long long>(kv_tokens), static_cast<long long>(kv_tokens / config.page_size),
              static_cast<long long>(config.page_size),
              static_cast<long long>(service_config.max_model_len));
  std::printf("dserve serve: HTTP on http://%s:%d", http_options.host.c_str(), http->port());
  if (grpc) std::printf(", gRPC on %s:%d", http_options.host.c_str(), grpc->port());
  std::printf("\n");
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  std::printf("dserve serve: %s: draining (up to %llds)\n", signal == SIGINT ? "SIGINT" : "SIGTERM",
              static_cast<long long>(shutdown_s));
  std::fflush(stdout);
  http->StopAccepting();
  service.BeginShutdown();
  if (grpc) grpc->BeginDrain();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(shutdown_s);
  while (service.active() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  if (service.active() > 0) {
    std::printf("dserve serve: cancelling %lld requests still running\n",
                static_cast<long long>(service.active()));
    service.CancelAll();
    const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (service.active() > 0 && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  // Whatever is left is cancelled and its last callbacks delivered while everything they
  // reach (metrics, connections) still exists.
  engine.Shutdown();
  if (grpc) grpc->Shutdown(milliseconds(1000));
  http->WaitIdle(milliseconds(2000));
  http->Stop();
  std::printf("dserve serve: stopped\n");
  return absl::OkStatus();
}

}  // namespace

int RunServe(const Args& args) {
  Flags flags;
  int code;
  if (!ParseOrExit("serve",
                   "Serve the model over the OpenAI-compatible HTTP API and gRPC until SIGINT or "
                   "SIGTERM.",
                   ServeFlags(), args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Serve(flags); !s.ok()) return ReportError("serve", s);
  return 0;
}

}  // namespace dserve::cli
