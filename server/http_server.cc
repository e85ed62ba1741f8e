#include "server/http_server.h"

#include <algorithm>
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
  tcp::acceptor acceptor{ioc};
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
      : stream_(std::move(socket)), server_(server) {}

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
      self->Enqueue(self->Head(status, ct, h, &b) + b);
      self->CompleteExchange();
    });
  }

  void StartStream(std::string content_type, HeaderList headers) override {
    Post([self = shared_from_this(), ct = std::move(content_type),
          h = std::move(headers)]() mutable {
      if (self->closed_ || self->exchange_done_ || self->streaming_) return;
      self->streaming_ = true;
      self->Enqueue(self->Head(200, ct, h, nullptr));
    });
  }

  void StreamChunk(std::string data) override {
    if (data.empty()) return;  // an empty chunk would end the stream
    Post([self = shared_from_this(), d = std::move(data)]() mutable {
      if (self->closed_ || self->exchange_done_ || !self->streaming_) return;
      char size[32];
      std::snprintf(size, sizeof(size), "%zx\r\n", d.size());
      self->Enqueue(absl::StrCat(size, d, "\r\n"));
    });
  }

  void EndStream() override {
    Post([self = shared_from_this()] {
      if (self->closed_ || self->exchange_done_ || !self->streaming_) return;
      self->Enqueue("0\r\n\r\n");
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
  template <typename F>
  void Post(F&& f) {
    net::post(stream_.get_executor(), std::forward<F>(f));
  }

  std::string Head(int status, const std::string& content_type, const HeaderList& headers,
                   const std::string* body) {
    std::string head = absl::StrCat(
        "HTTP/1.1 ", status, " ",
        std::string(http::obsolete_reason(static_cast<http::status>(status))), "\r\n",
        "Server: dserve\r\nContent-Type: ", content_type, "\r\n");
    if (body) {
      absl::StrAppend(&head, "Content-Length: ", body->size(), "\r\n");
    } else {
      absl::StrAppend(&head, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    }
    for (const auto& [k, v] : headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
    absl::StrAppend(&head, keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n",
                    "\r\n");
    return head;
  }

  void DoRead() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(server_->options.max_header_bytes));
    stream_.expires_after(buffer_.size() > 0 ? server_->options.read_timeout
                                             : server_->options.idle_timeout);
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
    http::request<http::string_body> req = parser_->release();
    HttpRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    request.path = request.target.substr(0, request.target.find('?'));
    for (const auto& field : req) {
      request.headers.emplace_back(Lower(std::string(field.name_string())),
                                   std::string(field.value()));
    }
    request.body = std::move(req.body());
    request.keep_alive = req.keep_alive();
    keep_alive_ = request.keep_alive;
    exchange_done_ = false;
    Count(true);
    streaming_ = false;
    StartWatch();
    server_->handler(request, shared_from_this());
  }

  // Answers a request that could not be parsed, then closes.
  // Tracks whether this connection has a response in progress (HttpServer::WaitIdle).
  void Count(bool busy) {
    if (busy == counted_) return;
    counted_ = busy;
    server_->busy_exchanges.fetch_add(busy ? 1 : -1);
  }

  void Fail(int status, const std::string& message) {
    const std::string type = status == 413 ? "invalid_request_error" : "invalid_request_error";
    std::string body = ErrorBody(message, type);
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
    if (!exchange_done_) ClientGone();
    Close();
  }

  void ClientGone() {
    if (auto g = std::move(gone_)) {
      gone_ = nullptr;
      g();
    }
  }

  void Enqueue(std::string bytes) {
    out_.push_back(std::move(bytes));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (out_.empty() || closed_) return;
    writing_ = true;
    net::async_write(stream_.socket(), net::buffer(out_.front()),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnWrite(ec);
                     });
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    if (closed_) return;
    if (ec) {
      if (!exchange_done_) ClientGone();
      return Close();
    }
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
    if (!keep_alive_) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return Close();
    }
    if (watching_) {  // stop the watch read first; its handler continues with Next()
      next_after_watch_ = true;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
      return;
    }
    Next();
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
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    std::lock_guard<std::mutex> lock(server_->sessions_mu);
    server_->sessions.erase(this);
  }

  beast::tcp_stream stream_;
  HttpServer::Impl* server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  // Everything below is touched on the connection's strand only.
  std::deque<std::string> out_;
  bool writing_ = false;
  bool keep_alive_ = true;
  bool exchange_done_ = true;  // no request in progress (or its response fully queued)
  bool finishing_ = false;
  bool streaming_ = false;
  bool watching_ = false;
  bool next_after_watch_ = false;
  bool closed_ = false;
  bool counted_ = false;
  std::function<void()> gone_;
};

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || !accepting) return;
      return Accept();  // e.g. too many open files: keep serving the connections we have
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<Session>(std::move(socket), this);
    {
      std::lock_guard<std::mutex> lock(sessions_mu);
      sessions[session.get()] = session;
    }
    session->Start();
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
  net::post(impl_->ioc, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
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
