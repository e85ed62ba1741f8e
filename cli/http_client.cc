#include "cli/http_client.h"

#include <cctype>
#include <cstdint>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dserve::cli {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct HttpClient::Connection {
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  // Has carried a whole exchange: the server may have closed it since (idle timeout), so a
  // failure before any answer arrives is retried once on a fresh connection.
  bool reused = false;
};

namespace {

// Boost 1.74's beast::string_view is boost::string_view, not std::string_view.
std::string ToString(beast::string_view s) { return std::string(s.data(), s.size()); }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Runs one asynchronous operation to completion on `ioc`. The operations are asynchronous
// only because beast::tcp_stream applies its deadline to asynchronous operations alone.
template <typename Start>
beast::error_code RunToCompletion(net::io_context& ioc, Start start) {
  beast::error_code result;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

// Errors that mean a kept-alive connection was closed by the server while idle.
bool IsStaleConnection(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::connection_aborted;
}

// Splits a text/event-stream into events as bytes arrive (any split points), per the SSE
// rules: "data:" lines accumulate (joined with "\n"), a blank line dispatches, ":" lines are
// comments, other fields are ignored, and an event not ended by a blank line is dropped.
class SseDecoder {
 public:
  using OnEvent = std::function<bool(std::string_view)>;

  // False once on_event asked to stop; nothing more is delivered after that.
  bool Feed(std::string_view bytes, const OnEvent& on_event) {
    size_t start = 0;
    while (start < bytes.size()) {
      const size_t nl = bytes.find('\n', start);
      if (nl == std::string_view::npos) {
        partial_.append(bytes.substr(start));
        break;
      }
      std::string_view line = bytes.substr(start, nl - start);
      if (!partial_.empty()) {
        partial_.append(line);
        line = partial_;
      }
      start = nl + 1;
      const bool go_on = Line(line, on_event);
      partial_.clear();
      if (!go_on) return false;
    }
    return true;
  }

 private:
  bool Line(std::string_view line, const OnEvent& on_event) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      if (!has_data_) return true;
      has_data_ = false;
      const std::string data = std::move(data_);
      data_.clear();
      return on_event(data);
    }
    if (line.front() == ':') return true;
    const size_t colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field != "data") return true;
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
    return true;
  }

  std::string partial_;  // a line whose end has not arrived yet
  std::string data_;
  bool has_data_ = false;
};

}  // namespace

std::string HttpResponse::Header(std::string_view name) const {
  const std::string lower = Lower(name);
  for (const auto& [n, v] : headers) {
    if (n == lower) return v;
  }
  return "";
}

absl::StatusOr<Url> Url::Parse(const std::string& url) {
  std::string rest = url;
  if (const size_t p = rest.find("://"); p != std::string::npos) {
    const std::string scheme = Lower(rest.substr(0, p));
    if (scheme == "https") return absl::InvalidArgumentError("https is not supported");
    if (scheme != "http") {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported scheme '", scheme, "' in URL '", url, "' (use http://)"));
    }
    rest = rest.substr(p + 3);
  }
  Url out;
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.path_prefix = rest.substr(slash);
  while (!out.path_prefix.empty() && out.path_prefix.back() == '/') out.path_prefix.pop_back();

  std::string port;
  if (!authority.empty() && authority.front() == '[') {  // [::1]:8000
    const size_t close = authority.find(']');
    if (close == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("unclosed '[' in URL '", url, "'"));
    }
    out.host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return absl::InvalidArgumentError(absl::StrCat("bad host in URL '", url, "'"));
      }
      port = after.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string::npos) {
    out.host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  } else {
    out.host = authority;
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no host in URL '", url, "'"));
  }
  if (!port.empty()) {
    int v;
    if (!absl::SimpleAtoi(port, &v) || v < 1 || v > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad port '", port, "' in URL '", url, "' (1..65535)"));
    }
    out.port = v;
  }
  return out;
}

HttpClient::HttpClient(std::string host, int port) : host_(std::move(host)), port_(port) {}
HttpClient::~HttpClient() { Close(); }
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;

void HttpClient::SetTimeout(std::chrono::milliseconds t) { timeout_ = t; }

void HttpClient::Close() {
  if (!conn_) return;
  beast::error_code ignored;
  conn_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  conn_->stream.close();
  conn_.reset();
}

absl::StatusOr<HttpResponse> HttpClient::Request(
    const std::string& method, const std::string& target, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  return Exchange(method, target, body, headers, nullptr);
}

absl::StatusOr<HttpResponse> HttpClient::Stream(
    const std::string& target, const std::string& body,
    const std::function<bool(std::string_view data)>& on_event,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  return Exchange("POST", target, body, headers, &on_event);
}

absl::StatusOr<HttpResponse> HttpClient::Exchange(
    const std::string& method, const std::string& target, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::function<bool(std::string_view)>* on_event) {
  const bool ipv6 = host_.find(':') != std::string::npos;
  const std::string where = absl::StrCat(ipv6 ? "[" : "", host_, ipv6 ? "]:" : ":", port_);
  auto failure = [&](const std::string& what, const beast::error_code& ec) {
    Close();
    if (ec == beast::error::timeout) {
      return absl::DeadlineExceededError(absl::StrCat(method, " ", target, " to ", where,
                                                      ": no complete answer within ",
                                                      timeout_.count(), " ms"));
    }
    return absl::UnavailableError(
        absl::StrCat(what, " ", where, " (", method, " ", target, "): ", ec.message()));
  };

  http::request<http::string_body> req;
  req.version(11);
  req.method_string(method);
  req.target(target);
  req.set(http::field::host, where);
  req.set(http::field::user_agent, "dserve-cli");
  if (on_event) req.set(http::field::accept, "text/event-stream");
  bool has_type = false;
  for (const auto& [name, value] : headers) has_type |= Lower(name) == "content-type";
  if (!body.empty() && !has_type) req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) req.set(name, value);
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();

  for (int attempt = 0;; ++attempt) {
    if (!conn_) {
      conn_ = std::make_unique<Connection>();
      conn_->stream.expires_after(timeout_);
      tcp::resolver resolver(conn_->ioc);
      beast::error_code ec;
      const auto endpoints = resolver.resolve(host_, std::to_string(port_), ec);
      if (ec) return failure("cannot resolve", ec);
      ec = RunToCompletion(conn_->ioc, [&](auto handler) {
        conn_->stream.async_connect(endpoints, std::move(handler));
      });
      if (ec) return failure("cannot connect to", ec);
      // Requests are small writes followed by a wait: Nagle would add delay to every one.
      conn_->stream.socket().set_option(tcp::no_delay(true), ec);
    } else {
      conn_->stream.expires_after(timeout_);
    }
    Connection& c = *conn_;
    const bool retry_allowed = c.reused && attempt == 0;

    beast::error_code ec = RunToCompletion(
        c.ioc, [&](auto handler) { http::async_write(c.stream, req, std::move(handler)); });
    if (ec) {
      if (retry_allowed && IsStaleConnection(ec)) {
        Close();
        continue;
      }
      return failure("sending to", ec);
    }

    http::response_parser<http::string_body> parser;
    parser.body_limit(std::uint64_t{1} << 30);
    SseDecoder decoder;
    bool abandoned = false;
    std::string error_body;  // a non-200 chunked answer to Stream
    auto on_chunk = [&](std::uint64_t /*remain*/, beast::string_view data,
                        beast::error_code& chunk_ec) -> std::size_t {
      if (parser.get().result_int() != 200) {
        error_body.append(data.data(), data.size());
      } else if (!abandoned &&
                 !decoder.Feed(std::string_view(data.data(), data.size()), *on_event)) {
        abandoned = true;
        chunk_ec = net::error::operation_aborted;  // stops the read at once
      }
      return data.size();
    };
    if (on_event) parser.on_chunk_body(on_chunk);
    try {
      ec = RunToCompletion(c.ioc, [&](auto handler) {
        http::async_read(c.stream, c.buffer, parser, std::move(handler));
      });
    } catch (...) {  // thrown by on_event: the rest of the answer is still unread
      Close();
      throw;
    }

    HttpResponse response;
    if (parser.is_header_done()) {
      response.status = parser.get().result_int();
      for (const auto& field : parser.get()) {
        response.headers.emplace_back(Lower(ToString(field.name_string())),
                                      ToString(field.value()));
      }
    }
    if (abandoned) {
      Close();  // the server sees the client go away
      return response;
    }
    if (ec) {
      if (retry_allowed && !parser.got_some() && IsStaleConnection(ec)) {
        Close();
        continue;
      }
      return failure(parser.is_header_done() ? "answer cut short from" : "no answer from", ec);
    }

    std::string whole = std::move(error_body);
    whole += parser.get().body();
    if (on_event && response.status == 200) {
      // Not chunked (length-delimited): the events arrive together, but they still arrive.
      if (!whole.empty() && !decoder.Feed(whole, *on_event)) {
        Close();
        return response;
      }
    } else {
      response.body = std::move(whole);
    }
    if (parser.get().keep_alive()) {
      c.reused = true;
      c.stream.expires_never();
    } else {
      Close();
    }
    return response;
  }
}

}  // namespace dserve::cli
