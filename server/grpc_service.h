// The gRPC front end: the dserve.v1.Dserve service (streaming Generate/Chat, Tokenize,
// Detokenize, ListModels) on the callback API, plus grpc.health.v1 and server reflection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "grpcpp/support/status.h"
#include "server/api_types.h"
#include "server/generation_service.h"

namespace dserve::server {

// The status a gRPC client sees for an API error; the message is the ApiError's (it already
// names the offending field). 413 becomes INVALID_ARGUMENT: in gRPC, RESOURCE_EXHAUSTED means
// "retry later", which a too-large request never should.
grpc::Status ToGrpcStatus(const ApiError& error);

class DserveGrpcService;  // the generated service's implementation (grpc_service.cc)

// Owns the grpc::Server and the service behind it. Calls run on gRPC's callback threads and
// never block on the engine: streamed events are queued and written one at a time.
class GrpcServer {
 public:
  struct Options {
    std::string host = "0.0.0.0";
    int port = 0;         // 0: the OS picks a free port (see port())
    std::string api_key;  // non-empty: dserve.v1 calls need "authorization: Bearer <key>"
    int64_t max_message_bytes = 16 << 20;  // both directions
    // Per Generate/Chat call: the serialized bytes of messages waiting for the client to read.
    // An event that would go past it (while something is already waiting) cancels the
    // generation and ends the call with RESOURCE_EXHAUSTED, so a client that never reads
    // cannot make the server buffer a whole generation.
    int64_t max_pending_bytes = 16 << 20;
  };

  // Binds and starts serving; an error (e.g. the port is taken) leaves nothing running.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(GenerationService& service,
                                                           const Options& options);
  // Shuts down with no grace period if Shutdown was not called.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  // Health (the server "" and dserve.v1.Dserve) turns NOT_SERVING so that load balancers stop
  // sending calls; calls keep being served. For the start of a drain (e.g. on SIGTERM), before
  // Shutdown. Idempotent, callable from any thread (not from a signal handler).
  void BeginDrain();

  // Health turns NOT_SERVING, new calls are refused, and calls still running after `deadline`
  // are cancelled (their generations too); returns once every call has finished. Idempotent.
  // Draining the GenerationService is the caller's business (it is shared with HTTP).
  void Shutdown(std::chrono::milliseconds deadline);

 private:
  GrpcServer() = default;

  // Declared before server_ so that it outlives it: the server calls into it until shut down.
  std::unique_ptr<DserveGrpcService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::once_flag shutdown_once_;
};

}  // namespace dserve::server
