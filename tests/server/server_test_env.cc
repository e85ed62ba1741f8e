#include "tests/server/server_test_env.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "engine/chat/chat_template.h"
#include "engine/engine_core.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"
#include "server/grpc_service.h"
#include "server/http_server.h"
#include "server/openai_routes.h"
#include "tests/support/test_env.h"

namespace dserve::server::testing {
namespace {

namespace fs = std::filesystem;

struct Env {
  std::string model_dir;
  std::string model_name = "tiny-v3";
  std::unique_ptr<kernels::cpu::CpuOps> ops;
  std::unique_ptr<models::DeepseekModel> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::optional<engine::ChatTemplate> chat_template;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<GenerationService> service;
  std::unique_ptr<OpenAiRouter> router;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<GrpcServer> grpc;
};

#define ENV_CHECK(cond, what)                                   \
  do {                                                          \
    if (!(cond)) {                                              \
      std::fprintf(stderr, "server test env: %s\n", (what));    \
      std::abort();                                             \
    }                                                           \
  } while (0)

Env* Start() {
  auto* env = new Env();  // lives for the process: servers' threads must never see it go
  env->model_dir = TinyModelDir();
  env->ops = std::make_unique<kernels::cpu::CpuOps>(2);
  auto model = models::DeepseekModel::Load(env->model_dir, *env->ops, /*show_progress=*/false);
  ENV_CHECK(model.ok(), std::string(model.status().message()).c_str());
  env->model = *std::move(model);
  auto tokenizer = engine::LoadTokenizer(env->model_dir);
  ENV_CHECK(tokenizer.ok(), std::string(tokenizer.status().message()).c_str());
  env->tokenizer = *std::move(tokenizer);
  auto chat = engine::ChatTemplate::FromModelDir(env->model_dir);
  ENV_CHECK(chat.ok(), std::string(chat.status().message()).c_str());
  env->chat_template = *std::move(chat);

  engine::EngineConfig config;
  config.num_pages = 2048;  // 131,072 tokens: room for hundreds of short streams
  config.scheduler.max_num_seqs = 64;
  config.scheduler.max_batched_tokens = 512;
  config.sampler_threads = 2;
  auto core = engine::EngineCore::Create(*env->model, env->tokenizer.get(), config);
  ENV_CHECK(core.ok(), std::string(core.status().message()).c_str());
  const int64_t kv_tokens = (*core)->num_pages() * (*core)->page_size();
  env->engine = std::make_unique<engine::Engine>(*std::move(core));

  env->metrics = std::make_unique<ServerMetrics>(ServerMetricsOptions{env->model_name});
  engine::Engine* eng = env->engine.get();
  const models::ExpertLoad* load = &env->model->expert_load();
  env->metrics->SetEngineStateSource([eng, load] {
    const engine::EngineGauges g = eng->gauges();
    EngineState s;
    s.num_running = g.running;
    s.num_waiting = g.waiting;
    s.kv_pages_used = g.kv_used_pages;
    s.kv_pages_total = g.kv_total_pages;
    s.num_preemptions = g.preemptions;
    const engine::EngineStats stats = eng->stats();
    s.draft_tokens = stats.draft_tokens;
    s.accepted_draft_tokens = stats.accepted_draft_tokens;
    s.expert_tokens = load->Snapshot();
    s.expert_layers = load->layers();
    return s;
  });
  ServiceConfig sc;
  sc.served_model_name = env->model_name;
  sc.model_dir = env->model_dir;
  sc.max_queue = 1024;
  sc.max_model_len = std::min<int64_t>(env->model->config().max_position_embeddings, kv_tokens);
  env->service = std::make_unique<GenerationService>(*env->engine, *env->tokenizer,
                                                     &*env->chat_template, env->metrics.get(), sc);
  env->router = std::make_unique<OpenAiRouter>(*env->service, *env->metrics, RouterConfig{"", 0});

  HttpOptions http;
  http.port = 0;
  http.threads = 2;
  http.max_body_bytes = 8 << 20;
  http.read_timeout = std::chrono::milliseconds(2000);  // the slow-client tests wait this out
  OpenAiRouter* router = env->router.get();
  auto server = HttpServer::Start(
      [router](const HttpRequest& r, std::shared_ptr<ResponseChannel> c) {
        router->Handle(r, std::move(c));
      },
      http);
  ENV_CHECK(server.ok(), std::string(server.status().message()).c_str());
  env->http = *std::move(server);

  GrpcServer::Options grpc;
  grpc.host = "127.0.0.1";
  grpc.port = 0;
  auto grpc_server = GrpcServer::Start(*env->service, grpc);
  ENV_CHECK(grpc_server.ok(), std::string(grpc_server.status().message()).c_str());
  env->grpc = *std::move(grpc_server);
  return env;
}

Env& GetEnv() {
  static Env* env = Start();
  return *env;
}

}  // namespace

GenerationService& TestServerEnv::service() { return *GetEnv().service; }
ServerMetrics& TestServerEnv::metrics() { return *GetEnv().metrics; }
engine::Engine& TestServerEnv::engine() { return *GetEnv().engine; }
const std::string& TestServerEnv::model_name() { return GetEnv().model_name; }
const std::string& TestServerEnv::model_dir() { return GetEnv().model_dir; }
int TestServerEnv::http_port() { return GetEnv().http->port(); }
int TestServerEnv::grpc_port() { return GetEnv().grpc->port(); }

TestServerEnv& SharedEnv() {
  static TestServerEnv env;
  GetEnv();
  return env;
}

const std::string& TinyModelDir() {
  static const std::string dir = [] {
    const fs::path target = fs::path(DSERVE_TEST_MODELS_DIR) / "tiny-v3-seed0";
    if (fs::exists(target / "model.safetensors.index.json")) return target.string();
    fs::create_directories(target.parent_path());
    // Written beside the target and renamed into place: parallel test processes never see a
    // half-written checkpoint, and the loser of a race just uses the winner's.
    const fs::path tmp = target.string() + ".tmp" + std::to_string(getpid());
    std::string output;
    const int rc = dserve::testing::RunCommand(
        dserve::testing::DserveBinary() + " make-model --preset tiny-v3 --seed 0 --out " +
            tmp.string(),
        &output);
    ENV_CHECK(rc == 0, output.c_str());
    std::error_code ec;
    fs::rename(tmp, target, ec);
    if (ec) fs::remove_all(tmp);
    ENV_CHECK(fs::exists(target / "model.safetensors.index.json"), "tiny-v3 was not written");
    return target.string();
  }();
  return dir;
}

bool WaitForNoPagesInUse(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const engine::EngineGauges g = SharedEnv().engine().gauges();
    if (g.kv_used_pages == 0 && g.running == 0 && g.waiting == 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace dserve::server::testing
