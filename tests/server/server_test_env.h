// What the server tests share: a tiny-v3 checkpoint (the real DeepSeek tokenizer and chat
// template, random weights) generated once into the build tree, and one in-process server on
// it — Engine, GenerationService, ServerMetrics, the HTTP API and gRPC on loopback ports.
#pragma once

#include <string>

#include "engine/engine.h"
#include "server/generation_service.h"
#include "server/metrics.h"

namespace dserve::server::testing {

struct TestServerEnv {
  GenerationService& service();
  ServerMetrics& metrics();
  engine::Engine& engine();
  const std::string& model_name();
  const std::string& model_dir();
  int http_port();
  int grpc_port();
};

// Started on first use, shared by every test of the binary (the model loads once).
TestServerEnv& SharedEnv();

// The generated tiny-v3 folder (made on first use; safe across parallel test processes).
const std::string& TinyModelDir();

// Polls until the engine holds no KV pages (every request released them); false after
// `timeout_ms`.
bool WaitForNoPagesInUse(int timeout_ms);

}  // namespace dserve::server::testing
