// HttpServer: an asynchronous HTTP/1.1 server on Boost.Beast/Asio (a few I/O threads, no
// thread per connection). It parses requests under size and time limits, hands each to one
// handler with a ResponseChannel, writes whole responses or chunked streams (SSE), and reports
// a client that goes away so its generation can be cancelled.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent, query included
  std::string path;    // target without the query
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  bool keep_alive = true;

  // The first header of that (lower-case) name, or "".
  std::string_view Header(std::string_view name) const;
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// How a handler answers. Thread-safe: calls from any thread are queued to the connection.
// Either Respond once, or StartStream, any number of StreamChunk, then EndStream.
class ResponseChannel {
 public:
  virtual ~ResponseChannel() = default;
  virtual void Respond(int status, std::string content_type, std::string body,
                       HeaderList headers = {}) = 0;
  virtual void StartStream(std::string content_type, HeaderList headers = {}) = 0;
  virtual void StreamChunk(std::string data) = 0;
  virtual void EndStream() = 0;
  // `gone` runs once (on an I/O thread) if the client closes or resets the connection before
  // the response is complete; immediately if it already has.
  virtual void OnClientGone(std::function<void()> gone) = 0;
  // Runs fn on the connection's I/O strand, ordered with the calls above: lets a producer on
  // another thread (the engine's) hand off formatting work instead of doing it itself.
  virtual void Run(std::function<void()> fn) = 0;
};

// Runs on the connection's strand: work the handler hands to ResponseChannel::Run (or that
// the channel's calls queue) runs after it returns, in order.
using HttpHandler =
    std::function<void(const HttpRequest& request, std::shared_ptr<ResponseChannel> channel)>;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see HttpServer::port)
  int threads = 2;
  size_t max_body_bytes = 8 << 20;
  size_t max_header_bytes = 64 << 10;
  // A request's headers and body must arrive within this (slow clients are dropped).
  std::chrono::milliseconds read_timeout{30000};
  // Idle keep-alive connections are closed after this.
  std::chrono::milliseconds idle_timeout{60000};
  // A write the client does not take within this ends the connection (and its generation).
  std::chrono::milliseconds write_timeout{60000};
  // Response bytes queued for a client that reads slower than it is served; beyond this the
  // connection ends and its generation is cancelled.
  size_t max_queued_bytes = 16 << 20;
  // Connections beyond this are closed as soon as they are accepted.
  size_t max_connections = 4096;
  // SO_SNDBUF of accepted sockets (0: the OS's autotuning). Smaller notices a client that
  // stopped reading sooner, as less of the stream hides in the kernel.
  int socket_send_buffer = 0;
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpHandler handler,
                                                           const HttpOptions& options);
  ~HttpServer();

  int port() const;
  // Stops accepting new connections; open ones continue.
  void StopAccepting();
  // Waits (up to `timeout`) until no response is being produced or written; false on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout);
  // Closes every connection and joins the I/O threads.
  void Stop();

 private:
  friend class Session;
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dserve::server
