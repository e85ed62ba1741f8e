#include "server/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <pthread.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/str_cat.h"

namespace dserve::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// Bytes read ahead while a response is pending (a pipelined next request) before the
// connection stops watching for the client going away.
constexpr size_t kMaxReadAhead = 64 << 10;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string ErrorBody(std::string_view message, std::string_view type) {
  // A minimal OpenAI-shaped error for failures found before any handler runs.
  std::string escaped;
  for (char c : message) {
    if (c == '"' || c == '\\') escaped += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    escaped += c;
  }
  return absl::StrCat(R"({"error":{"message":")", escaped, R"(","type":")", std::string(type),
                      R"(","param":null,"code":null}})");
}

}  // namespace

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return {};
}

class Session;

struct HttpServer::Impl {
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  // On a strand: the accept handler re-arms it while StopAccepting may close it.
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer retry_timer{acceptor.get_executor()};
  HttpHandler handler;
  HttpOptions options;
  std::vector<std::thread> threads;
  int port = 0;
  std::mutex sessions_mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  std::atomic<bool> accepting{true};
  std::atomic<int64_t> busy_exchanges{0};

  void Accept();
};

class Session : public ResponseChannel, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), write_timer_(stream_.get_executor()), server_(server) {}

  void Start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }

  void CloseFromServer() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->Close(); });
  }

  void Respond(int status, std::string content_type, std::string body,
               HeaderList headers) override {
    Post([self = shared_from_this(), status, ct = std::move(content_type), b = std::move(body),
          h = std::move(headers)]() mutable {
      if (self->closed_ || self->exchange_done_ || self->streaming_) return;
      std::string head = self->Head(status, ct, h, &b);
      // HEAD: the headers GET would send (its Content-Length included), no body.
      self->Enqueue(self->head_request_ ? std::move(head) : head + b);
      self->CompleteExchange();
    });
  }

  void StartStream(std::string content_type, HeaderList headers) override {
    Post([self = shared_from_this(), ct = std::move(content_type),
          h = std::move(headers)]() mutable {
      if (self->closed_ || self->exchange_done_ || self->streaming_) return;
      self->streaming_ = true;
      // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
      if (self->http10_) self->keep_alive_ = false;
      self->Enqueue(self->Head(200, ct, h, nullptr));
    });
  }

  void StreamChunk(std::string data) override {
    if (data.empty()) return;  // an empty chunk would end the stream
    Post([self = shared_from_this(), d = std::move(data)]() mutable {
      if (self->closed_ || self->exchange_done_ || !self->streaming_) return;
      if (self->http10_) return self->Enqueue(std::move(d));
      char size[32];
      std::snprintf(size, sizeof(size), "%zx\r\n", d.size());
      self->Enqueue(absl::StrCat(size, d, "\r\n"));
    });
  }

  void EndStream() override {
    Post([self = shared_from_this()] {
      if (self->closed_ || self->exchange_done_ || !self->streaming_) return;
      if (!self->http10_) self->Enqueue("0\r\n\r\n");
      self->CompleteExchange();
    });
  }

  void Run(std::function<void()> fn) override { Post(std::move(fn)); }

  void OnClientGone(std::function<void()> gone) override {
    Post([self = shared_from_this(), g = std::move(gone)]() mutable {
      if (self->exchange_done_) return;
      if (self->closed_) {
        g();
      } else {
        self->gone_ = std::move(g);
      }
    });
  }

 private:
  // Runs f on the strand: at once when already on it (a handler, or formatting work handed
  // off with Run), else queued.
  template <typename F>
  void Post(F&& f) {
    net::dispatch(stream_.get_executor(), std::forward<F>(f));
  }

  std::string Head(int status, const std::string& content_type, const HeaderList& headers,
                   const std::string* body) {
    std::string head = absl::StrCat(
        http10_ ? "HTTP/1.0 " : "HTTP/1.1 ", status, " ",
        std::string(http::obsolete_reason(static_cast<http::status>(status))), "\r\n",
        "Server: dserve\r\nContent-Type: ", content_type, "\r\n");
    if (body) {
      absl::StrAppend(&head, "Content-Length: ", body->size(), "\r\n");
    } else {
      if (!http10_) absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
      absl::StrAppend(&head, "Cache-Control: no-cache\r\n");
    }
    for (const auto& [k, v] : headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
    absl::StrAppend(&head, keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n",
                    "\r\n");
    return head;
  }

  // An idle connection waits up to idle_timeout for its next request's first byte; from then
  // on the whole request must arrive within read_timeout (slow clients are dropped).
  void DoRead() {
    if (closed_) return;
    if (buffer_.size() > 0) return ReadRequest();
    stream_.expires_after(server_->options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->Close();
                              self->buffer_.commit(n);
                              self->ReadRequest();
                            });
  }

  void ReadRequest() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(server_->options.max_header_bytes));
    stream_.expires_after(server_->options.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (closed_) return;
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == beast::error::timeout || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted) {
      return Close();
    }
    if (ec) {
      keep_alive_ = false;
      exchange_done_ = false;
      if (ec == http::error::body_limit) {
        return Fail(413, absl::StrCat("request body exceeds the limit of ",
                                      server_->options.max_body_bytes, " bytes"));
      }
      if (ec == http::error::header_limit) {
        return Fail(431, "request headers are too large");
      }
      if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
        return Fail(400, absl::StrCat("malformed HTTP request: ", ec.message()));
      }
      return Close();
    }
    stream_.expires_never();
    http::request<http::dynamic_body> req = parser_->release();
    HttpRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    request.path = request.target.substr(0, request.target.find('?'));
    for (const auto& field : req) {
      request.headers.emplace_back(Lower(std::string(field.name_string())),
                                   std::string(field.value()));
    }
    request.body = beast::buffers_to_string(req.body().data());
    request.keep_alive = req.keep_alive();
    keep_alive_ = request.keep_alive;
    http10_ = req.version() < 11;
    head_request_ = req.method() == http::verb::head;
    exchange_done_ = false;
    streaming_ = false;
    Count(true);
    StartWatch();
    server_->handler(request, shared_from_this());
  }

  // Tracks whether this connection has a response in progress (HttpServer::WaitIdle).
  void Count(bool busy) {
    if (busy == counted_) return;
    counted_ = busy;
    server_->busy_exchanges.fetch_add(busy ? 1 : -1);
  }

  // Answers a request that could not be parsed, then closes (after lingering, so that a
  // client still sending its body reads the answer instead of a reset).
  void Fail(int status, const std::string& message) {
    linger_ = true;
    std::string body = ErrorBody(message, "invalid_request_error");
    Enqueue(Head(status, "application/json", {}, &body) + body);
    CompleteExchange();
  }

  // While a response is pending, a read notices the client closing the connection.
  void StartWatch() {
    if (watching_ || closed_ || buffer_.size() >= kMaxReadAhead) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->OnWatch(ec, n);
                            });
  }

  void OnWatch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (!ec) {
      buffer_.commit(n);
      if (!exchange_done_) return StartWatch();
      if (next_after_watch_) {
        next_after_watch_ = false;
        Next();
      }
      return;
    }
    if (ec == net::error::operation_aborted && next_after_watch_) {
      next_after_watch_ = false;
      return Next();
    }
    if (closed_) return;
    if (!exchange_done_) {
      ClientGone();
      return Close();
    }
    // The answer is complete and only its writes remain: a client that half-closed still
    // reads them; then the connection ends.
    peer_closed_ = true;
    if (next_after_watch_) {
      next_after_watch_ = false;
      Close();
    }
  }

  void ClientGone() {
    if (auto g = std::move(gone_)) {
      gone_ = nullptr;
      g();
    }
  }

  void Enqueue(std::string bytes) {
    queued_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    // A client that stops reading must not make the server buffer its whole generation.
    if (streaming_ && queued_bytes_ > server_->options.max_queued_bytes) {
      if (!exchange_done_) ClientGone();
      return Close();
    }
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (out_.empty() || closed_) return;
    writing_ = true;
    write_timer_.expires_after(server_->options.write_timeout);
    write_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_ || !self->writing_) return;
      if (!self->exchange_done_) self->ClientGone();
      self->Close();  // the client stopped reading
    });
    net::async_write(stream_.socket(), net::buffer(out_.front()),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnWrite(ec);
                     });
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    write_timer_.cancel();
    if (closed_) return;
    if (ec) {
      if (!exchange_done_) ClientGone();
      return Close();
    }
    queued_bytes_ -= out_.front().size();
    out_.pop_front();
    if (!out_.empty()) return WriteNext();
    if (exchange_done_ && !finishing_) {
      finishing_ = true;
      FinishExchange();
    }
  }

  // The handler's last word is queued: drop the disconnect hook and, once written, move on.
  void CompleteExchange() {
    exchange_done_ = true;
    gone_ = nullptr;
    finishing_ = false;
    if (!writing_ && out_.empty()) {
      finishing_ = true;
      FinishExchange();
    }
  }

  void FinishExchange() {
    Count(false);
    if (!keep_alive_ || peer_closed_) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return linger_ ? Linger() : Close();
    }
    if (watching_) {  // stop the watch read first; its handler continues with Next()
      next_after_watch_ = true;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
      return;
    }
    Next();
  }

  // Reads and drops what the client still sends (up to 2 s) before closing.
  void Linger() {
    stream_.expires_after(std::chrono::seconds(2));
    stream_.async_read_some(net::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->Close();
                              self->Linger();
                            });
  }

  void Next() {
    finishing_ = false;
    DoRead();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    Count(false);
    if (!exchange_done_) ClientGone();
    write_timer_.cancel();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();  // queued bytes stay until the aborted write's handler has run
    std::lock_guard<std::mutex> lock(server_->sessions_mu);
    server_->sessions.erase(this);
  }

  beast::tcp_stream stream_;
  net::steady_timer write_timer_;
  HttpServer::Impl* server_;
  beast::flat_buffer buffer_;
  // dynamic_body grows with the bytes that arrive; string_body would reserve the whole
  // announced Content-Length up front.
  std::optional<http::request_parser<http::dynamic_body>> parser_;
  // Everything below is touched on the connection's strand only.
  std::deque<std::string> out_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool keep_alive_ = true;
  bool http10_ = false;
  bool head_request_ = false;
  bool exchange_done_ = true;  // no request in progress (or its response fully queued)
  bool finishing_ = false;
  bool streaming_ = false;
  bool watching_ = false;
  bool next_after_watch_ = false;
  bool peer_closed_ = false;
  bool linger_ = false;
  bool closed_ = false;
  bool counted_ = false;
  std::function<void()> gone_;
  std::array<char, 4096> drain_;
};

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || !accepting) return;
      // E.g. out of file descriptors: retry shortly (at once would spin) and keep serving the
      // connections we have.
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && accepting) Accept();
      });
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (options.socket_send_buffer > 0) {
      socket.set_option(net::socket_base::send_buffer_size(options.socket_send_buffer), ignored);
    }
    std::shared_ptr<Session> session;
    {
      std::lock_guard<std::mutex> lock(sessions_mu);
      if (sessions.size() < options.max_connections) {
        session = std::make_shared<Session>(std::move(socket), this);
        sessions[session.get()] = session;
      }
    }
    if (session) {
      session->Start();
    } else {
      socket.close(ignored);  // over --max-connections: refused at once
    }
    if (accepting) Accept();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpHandler handler,
                                                               const HttpOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  impl->options = options;
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--host ", options.host, " is not an IP address: ", ec.message()));
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.host, ":",
                                               options.port, ": ", ec.message()));
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->work.emplace(impl->ioc.get_executor());
  impl->Accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([ioc = &impl->ioc] { ioc->run(); });
    pthread_setname_np(impl->threads.back().native_handle(), "dserve-http");
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

bool HttpServer::WaitIdle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (impl_->busy_exchanges.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void HttpServer::StopAccepting() {
  if (!impl_->accepting.exchange(false)) return;
  net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->retry_timer.cancel();
  });
}

void HttpServer::Stop() {
  if (impl_->threads.empty()) return;
  StopAccepting();
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard<std::mutex> lock(impl_->sessions_mu);
    for (auto& [ptr, weak] : impl_->sessions) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) s->CloseFromServer();
  open.clear();
  impl_->work.reset();
  // Let the closes run; whatever still holds the context after that is abandoned.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!impl_->ioc.stopped() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->ioc.stop();
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace dserve::server
