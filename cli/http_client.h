// HttpClient: a small blocking HTTP/1.1 client (one keep-alive connection, a whole-request
// timeout, SSE streams read as they arrive) for tests and the `dserve bench-serve` load generator.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::cli {

struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  // The first header of that name (any case), or "".
  std::string Header(std::string_view name) const;
};

struct Url {
  std::string host;
  int port = 80;
  std::string path_prefix;  // "" or "/prefix" (no trailing slash), put before every target

  // "http://127.0.0.1:8000", "http://host/prefix", "[::1]:8000" (no scheme: http).
  // https is refused: this client has no TLS.
  static absl::StatusOr<Url> Parse(const std::string& url);
};

// Not thread-safe: one client per thread. Transport failures are absl::Status errors
// (Unavailable; DeadlineExceeded on the timeout); any HTTP status is a successful answer.
class HttpClient {
 public:
  HttpClient(std::string host, int port);  // connects lazily; keep-alive connection reused
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Whole-request timeout (connect, send and the complete answer); default 60 s.
  void SetTimeout(std::chrono::milliseconds t);

  // Content-Type defaults to application/json when there is a body; `headers` override it.
  absl::StatusOr<HttpResponse> Request(
      const std::string& method, const std::string& target, const std::string& body,
      const std::vector<std::pair<std::string, std::string>>& headers = {});

  // POST with a streamed (chunked text/event-stream) answer: calls on_event with each SSE
  // event's data (the text after "data: "; multi-line data joined with "\n", "[DONE]" passed
  // on as is) as it arrives. Returning false from on_event closes the connection at once (a
  // client going away mid-stream). Returns the status and headers (body empty) when the stream
  // ended or was abandoned; a non-200 answer is returned whole, body included, with no events.
  absl::StatusOr<HttpResponse> Stream(
      const std::string& target, const std::string& body,
      const std::function<bool(std::string_view data)>& on_event,
      const std::vector<std::pair<std::string, std::string>>& headers = {});

  void Close();

 private:
  struct Connection;

  absl::StatusOr<HttpResponse> Exchange(
      const std::string& method, const std::string& target, const std::string& body,
      const std::vector<std::pair<std::string, std::string>>& headers,
      const std::function<bool(std::string_view)>* on_event);

  std::string host_;
  int port_;
  std::chrono::milliseconds timeout_{60000};
  std::unique_ptr<Connection> conn_;  // null until the first request, and after Close
};

}  // namespace dserve::cli
