// The HTTP API end to end: a real server on a loopback port (tiny-v3, the real tokenizer and
// chat template) driven by a real HTTP client and by raw sockets for malformed and hostile
// input. Every error status the front end promises is exercised, the server must keep serving
// after each, and clients that go away must leave no KV pages behind.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cli/http_client.h"
#include "nlohmann/json.hpp"
#include "server/openai_routes.h"
#include "tests/server/server_test_env.h"

namespace dserve::server::testing {
namespace {

using json = nlohmann::json;
using cli::HttpClient;
using cli::HttpResponse;

HttpClient Client() { return HttpClient("127.0.0.1", SharedEnv().http_port()); }

HttpResponse Post(const std::string& path, const std::string& body) {
  HttpClient c = Client();
  auto r = c.Request("POST", path, body, {{"Content-Type", "application/json"}});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : HttpResponse{};
}

HttpResponse Get(const std::string& path) {
  HttpClient c = Client();
  auto r = c.Request("GET", path, "");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : HttpResponse{};
}

// A completion request on token ids with exact lengths (ignore_eos) and greedy decoding.
json Completion(int prompt_len, int max_tokens, int first_id = 1000) {
  std::vector<int> prompt;
  for (int i = 0; i < prompt_len; ++i) prompt.push_back(first_id + 37 * i);
  return {{"model", "tiny-v3"}, {"prompt", prompt}, {"max_tokens", max_tokens},
          {"temperature", 0}, {"ignore_eos", true}};
}

json Chat(const std::string& text, int max_tokens) {
  return {{"model", "tiny-v3"},
          {"messages", json::array({{{"role", "user"}, {"content", text}}})},
          {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

struct StreamResult {
  int status = 0;
  std::vector<json> chunks;  // every data event but [DONE]
  bool done = false;         // ended with data: [DONE]
  std::string body;          // non-200: the error body
};

StreamResult Stream(const std::string& path, const json& body, int stop_after = -1) {
  HttpClient c = Client();
  StreamResult out;
  auto r = c.Stream(path, body.dump(), [&](std::string_view data) {
    if (data == "[DONE]") {
      out.done = true;
      return true;
    }
    out.chunks.push_back(json::parse(data));
    return stop_after < 0 || static_cast<int>(out.chunks.size()) < stop_after;
  });
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) {
    out.status = r->status;
    out.body = r->body;
  }
  return out;
}

// Raw socket: for what an HTTP client library refuses to send.
class RawConnection {
 public:
  // receive_buffer > 0: a small SO_RCVBUF, set before connecting (a client that reads slowly).
  explicit RawConnection(int port = SharedEnv().http_port(), int receive_buffer = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawConnection() { close(fd_); }
  bool connected() const { return connected_; }
  bool Send(std::string_view bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Everything until the server closes (or the 10 s receive timeout).
  std::string ReadAll() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

int StatusOf(const std::string& raw_response) {
  if (raw_response.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return std::stoi(raw_response.substr(9, 3));
}

std::string BodyOf(const std::string& raw_response) {
  const size_t at = raw_response.find("\r\n\r\n");
  return at == std::string::npos ? "" : raw_response.substr(at + 4);
}

// A metric's value from /metrics: the first sample whose line starts with `name` (and, when
// given, whose labels contain `label`); -1 when there is none.
double MetricValue(const std::string& text, const std::string& name,
                   const std::string& label = "") {
  size_t at = 0;
  while ((at = text.find(name, at)) != std::string::npos) {
    const size_t after = at + name.size();
    const bool whole_name = after < text.size() && (text[after] == ' ' || text[after] == '{');
    if ((at == 0 || text[at - 1] == '\n') && whole_name) {
      const size_t space = text.find(' ', at);
      const size_t end = text.find('\n', space);
      if (label.empty() || text.substr(at, space - at).find(label) != std::string::npos) {
        return std::stod(text.substr(space + 1, end - space - 1));
      }
    }
    at = after;
  }
  return -1;
}

TEST(HttpApiTest, HealthAndModels) {
  EXPECT_EQ(Get("/health").status, 200);
  HttpResponse models = Get("/v1/models");
  ASSERT_EQ(models.status, 200);
  json m = json::parse(models.body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "tiny-v3");
  EXPECT_GT(m["data"][0]["max_model_len"].get<int64_t>(), 0);
  EXPECT_EQ(Get("/v1/models/tiny-v3").status, 200);
  EXPECT_EQ(Get("/v1/models/gpt-4").status, 404);
}

TEST(HttpApiTest, CompletionHasExactLengthsAndUsage) {
  HttpResponse r = Post("/v1/completions", Completion(20, 8).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.Header("content-type").find("application/json"), std::string::npos);
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny-v3");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 20);
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  EXPECT_EQ(j["usage"]["total_tokens"], 28);
  EXPECT_TRUE(j["usage"]["prompt_tokens_details"].contains("cached_tokens"));
  // Greedy: the same request gives the same text, and its prompt is now cached.
  json again = json::parse(Post("/v1/completions", Completion(20, 8).dump()).body);
  EXPECT_EQ(again["choices"][0]["text"], j["choices"][0]["text"]);
}

TEST(HttpApiTest, StreamedChatEqualsTheWholeResponse) {
  json body = Chat("Tell me about latent attention.", 12);
  HttpResponse whole = Post("/v1/chat/completions", body.dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  json w = json::parse(whole.body);
  EXPECT_EQ(w["object"], "chat.completion");
  EXPECT_EQ(w["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(w["usage"]["completion_tokens"], 12);

  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  StreamResult s = Stream("/v1/chat/completions", body);
  ASSERT_EQ(s.status, 200) << s.body;
  ASSERT_TRUE(s.done);
  ASSERT_GE(s.chunks.size(), 3u);
  EXPECT_EQ(s.chunks.front()["choices"][0]["delta"]["role"], "assistant");
  std::string content, reasoning;
  std::string finish;
  for (const json& c : s.chunks) {
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], s.chunks.front()["id"]);
    if (c["choices"].empty()) continue;
    const json& d = c["choices"][0]["delta"];
    if (d.contains("content")) content += d["content"].get<std::string>();
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finish = c["choices"][0]["finish_reason"];
  }
  const json& msg = w["choices"][0]["message"];
  EXPECT_EQ(content, msg["content"].is_null() ? "" : msg["content"].get<std::string>());
  EXPECT_EQ(reasoning, msg.value("reasoning_content", ""));
  EXPECT_EQ(finish, "length");
  // The usage chunk comes last, with no choices.
  EXPECT_TRUE(s.chunks.back()["choices"].empty());
  EXPECT_EQ(s.chunks.back()["usage"]["completion_tokens"], 12);
}

TEST(HttpApiTest, TwoSamplesAndLogprobs) {
  json body = Chat("Pick a number.", 6);
  body["n"] = 2;
  body["temperature"] = 1.0;
  body["seed"] = 7;
  body["logprobs"] = true;
  body["top_logprobs"] = 3;
  HttpResponse r = Post("/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    const json& lp = j["choices"][i]["logprobs"]["content"];
    ASSERT_EQ(lp.size(), 6u);
    for (const json& e : lp) {
      EXPECT_LE(e["logprob"].get<double>(), 0.0);
      EXPECT_EQ(e["top_logprobs"].size(), 3u);
      EXPECT_TRUE(e["bytes"].is_array());
    }
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
}

TEST(HttpApiTest, StopStringEndsTheText) {
  json first = json::parse(Post("/v1/completions", Completion(12, 24, 3000).dump()).body);
  const std::string text = first["choices"][0]["text"];
  ASSERT_GE(text.size(), 8u);
  // A stop string taken from the middle of the greedy text (whole UTF-8 characters, at least
  // 3 bytes): the same request now ends before it.
  auto boundary = [&](size_t i) {
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  const size_t from = boundary(text.size() / 2);
  const size_t to = boundary(std::min(text.size(), from + 3));
  ASSERT_LT(from, to);
  const std::string stop = text.substr(from, to - from);
  json body = Completion(12, 24, 3000);
  body["stop"] = json::array({stop});
  json j = json::parse(Post("/v1/completions", body.dump()).body);
  const std::string cut = j["choices"][0]["text"];
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(cut, text.substr(0, text.find(stop)));
}

TEST(HttpApiTest, TokenizeAndDetokenizeRoundTrip) {
  HttpResponse t = Post("/tokenize", R"({"prompt": "Hello, DeepSeek!"})");
  ASSERT_EQ(t.status, 200) << t.body;
  json tj = json::parse(t.body);
  EXPECT_EQ(tj["count"], tj["tokens"].size());
  json ids = json::array();
  for (const json& id : tj["tokens"]) ids.push_back(id);
  HttpResponse d = Post("/detokenize", json{{"tokens", ids}}.dump());
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_NE(json::parse(d.body)["prompt"].get<std::string>().find("Hello, DeepSeek!"),
            std::string::npos);
}

struct BadCase {
  const char* name;
  const char* path;
  std::string body;
  int status;
  const char* param;  // nullptr: not checked
};

TEST(HttpApiTest, BadRequestsGetOpenAiErrorsAndTheServerKeepsServing) {
  const std::string long_prompt = Completion(600, 1).dump();
  std::string deep(100000, '[');
  const std::vector<BadCase> cases = {
      {"truncated JSON", "/v1/completions", R"({"prompt": [1, 2)", 400, ""},
      {"not an object", "/v1/completions", "[1, 2, 3]", 400, nullptr},
      {"null body", "/v1/chat/completions", "null", 400, nullptr},
      {"empty body", "/v1/chat/completions", "", 400, nullptr},
      {"invalid UTF-8", "/v1/completions", "{\"prompt\": \"\xff\xfe\"}", 400, nullptr},
      {"deep nesting", "/v1/completions", deep, 400, nullptr},
      {"messages not an array", "/v1/chat/completions", R"({"messages": "hi"})", 400, "messages"},
      {"empty messages", "/v1/chat/completions", R"({"messages": []})", 400, "messages"},
      {"unknown role", "/v1/chat/completions",
       R"({"messages": [{"role": "robot", "content": "x"}]})", 400, nullptr},
      {"image part", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
       400, nullptr},
      {"temperature string", "/v1/completions", R"({"prompt": "a", "temperature": "hot"})", 400,
       "temperature"},
      {"max_tokens float", "/v1/completions", R"({"prompt": "a", "max_tokens": 1.5})", 400,
       "max_tokens"},
      {"max_tokens negative", "/v1/completions", R"({"prompt": "a", "max_tokens": -1})", 400,
       "max_tokens"},
      {"max_tokens huge", "/v1/completions", R"({"prompt": "a", "max_tokens": 1e30})", 400,
       "max_tokens"},
      {"max_tokens 2^63", "/v1/completions",
       R"({"prompt": "a", "max_tokens": 9223372036854775808})", 400, nullptr},
      {"n zero", "/v1/completions", R"({"prompt": "a", "n": 0})", 400, nullptr},
      {"top_p too big", "/v1/completions", R"({"prompt": "a", "top_p": 5})", 400, nullptr},
      {"top_k string", "/v1/completions", R"({"prompt": "a", "top_k": "x"})", 400, "top_k"},
      {"stop number", "/v1/completions", R"({"prompt": "a", "stop": 5})", 400, "stop"},
      {"stream string", "/v1/completions", R"({"prompt": "a", "stream": "yes"})", 400, "stream"},
      {"top_logprobs 50", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 50})",
       400, "top_logprobs"},
      {"presence penalty 9", "/v1/completions", R"({"prompt": "a", "presence_penalty": 9})", 400,
       nullptr},
      {"seed string", "/v1/completions", R"({"prompt": "a", "seed": "abc"})", 400, "seed"},
      {"missing prompt", "/v1/completions", R"({"max_tokens": 3})", 400, "prompt"},
      {"empty prompt list", "/v1/completions", R"({"prompt": []})", 400, "prompt"},
      {"negative token id", "/v1/completions", R"({"prompt": [-1]})", 400, nullptr},
      {"token id past the vocabulary", "/v1/completions", R"({"prompt": [999999999]})", 400,
       "prompt"},
      {"stream_options without stream", "/v1/completions",
       R"({"prompt": "a", "stream_options": {"include_usage": true}})", 400, nullptr},
      {"unknown model", "/v1/completions", R"({"model": "gpt-4", "prompt": "a"})", 404, "model"},
      {"prompt past the context", "/v1/completions",
       long_prompt.substr(0, long_prompt.size() - 1) + R"(, "max_tokens": 200000})", 400,
       nullptr},
      {"unknown route", "/v1/embeddings", R"({"input": "a"})", 404, nullptr},
      {"detokenize past the vocabulary", "/detokenize", R"({"tokens": [1, 99999999]})", 400,
       "tokens"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    HttpResponse r = Post(c.path, c.body);
    EXPECT_EQ(r.status, c.status) << r.body;
    json j = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(j["error"].contains("type"));
    EXPECT_TRUE(j["error"].contains("param"));
    EXPECT_TRUE(j["error"].contains("code"));
    if (c.param && *c.param) {
      EXPECT_EQ(j["error"]["param"], c.param) << r.body;
    }
  }
  // The context error names both lengths.
  HttpResponse too_long = Post("/v1/completions", long_prompt.substr(0, long_prompt.size() - 1) +
                                                      R"(, "max_tokens": 200000})");
  EXPECT_NE(too_long.body.find("600"), std::string::npos) << too_long.body;
  EXPECT_NE(too_long.body.find("maximum context length"), std::string::npos);
  EXPECT_EQ(Get("/v1/chat/completions").status, 405);
  EXPECT_EQ(Get("/health").status, 200);
}

TEST(HttpApiTest, TenMegabyteBodyIs413) {
  RawConnection c;
  ASSERT_TRUE(c.connected());
  const size_t size = 10 << 20;
  std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: " + std::to_string(size) + "\r\n\r\n";
  c.Send(head);
  // The server may answer and close before the whole body is sent; that is the point.
  c.Send(std::string(size, ' '));
  const std::string response = c.ReadAll();
  EXPECT_EQ(StatusOf(response), 413) << response.substr(0, 200);
  EXPECT_NE(BodyOf(response).find("\"error\""), std::string::npos);
  EXPECT_EQ(Get("/health").status, 200);
}

TEST(HttpApiTest, MalformedHttpGets400) {
  for (const char* raw : {"GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                          "POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                          "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"}) {
    SCOPED_TRACE(raw);
    RawConnection c;
    ASSERT_TRUE(c.connected());
    c.Send(raw);
    const std::string response = c.ReadAll();
    EXPECT_EQ(StatusOf(response), 400) << response;
  }
  EXPECT_EQ(Get("/health").status, 200);
}

TEST(HttpApiTest, SlowClientIsDroppedWhileOthersAreServed) {
  RawConnection slow;
  ASSERT_TRUE(slow.connected());
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n";
    for (char ch : head) {
      if (done || !slow.Send(std::string_view(&ch, 1))) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
    }
  });
  // Others are answered at once meanwhile.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(Get("/health").status, 200);
  EXPECT_EQ(Post("/v1/completions", Completion(8, 2).dump()).status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // The trickling client is cut off once its request misses the read timeout (2 s here).
  const std::string response = slow.ReadAll();
  done = true;
  trickle.join();
  EXPECT_EQ(response, "");
}

TEST(HttpApiTest, ClientThatDisconnectsFreesItsPages) {
  ASSERT_TRUE(WaitForNoPagesInUse(10000));
  json body = Completion(16, 100000);
  body["stream"] = true;
  StreamResult s = Stream("/v1/completions", body, /*stop_after=*/2);
  EXPECT_EQ(s.chunks.size(), 2u);
  EXPECT_FALSE(s.done);
  EXPECT_TRUE(WaitForNoPagesInUse(5000));

  // Non-streaming too: the client waits, then hangs up.
  {
    RawConnection c;
    ASSERT_TRUE(c.connected());
    const std::string payload = Completion(16, 100000).dump();
    c.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
           std::to_string(payload.size()) + "\r\n\r\n" + payload);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_GT(SharedEnv().engine().gauges().kv_used_pages, 0);
  }
  EXPECT_TRUE(WaitForNoPagesInUse(5000));
}

TEST(HttpApiTest, ManyConcurrentStreamsAllCompleteWithDoneFraming) {
  constexpr int kClients = 256;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::vector<std::string> failures(kClients);
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([i, &ok, &failures] {
      json body = Completion(16, 8, 2000 + i * 13);
      body["stream"] = true;
      body["stream_options"] = {{"include_usage", true}};
      StreamResult s = Stream("/v1/completions", body);
      int64_t tokens = -1;
      if (!s.chunks.empty() && s.chunks.back().contains("usage") &&
          s.chunks.back()["usage"].is_object()) {
        tokens = s.chunks.back()["usage"]["completion_tokens"];
      }
      if (s.status == 200 && s.done && tokens == 8) {
        ++ok;
      } else {
        failures[i] = "status " + std::to_string(s.status) + " done " + std::to_string(s.done) +
                      " tokens " + std::to_string(tokens) + " " + s.body;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients);
  for (const std::string& f : failures) {
    if (!f.empty()) {
      ADD_FAILURE() << f;
      break;
    }
  }
  EXPECT_TRUE(WaitForNoPagesInUse(10000));
}

TEST(HttpApiTest, TwoHundredClientsDisconnectingMidStreamLeaveNoPagesInUse) {
  constexpr int kClients = 200;
  std::vector<std::thread> threads;
  std::atomic<int> got_tokens{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([i, &got_tokens] {
      json body = Completion(16, 100000, 5000 + i * 7);
      body["stream"] = true;
      StreamResult s = Stream("/v1/completions", body, /*stop_after=*/1 + i % 3);
      if (!s.chunks.empty()) ++got_tokens;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(got_tokens.load(), kClients);
  ASSERT_TRUE(WaitForNoPagesInUse(15000));
  // And as /metrics reports it.
  const std::string metrics = Get("/metrics").body;
  EXPECT_EQ(MetricValue(metrics, "dserve:kv_cache_used_pages"), 0.0) << metrics.substr(0, 2000);
  EXPECT_EQ(MetricValue(metrics, "dserve:num_requests_running"), 0.0);
  EXPECT_GE(MetricValue(metrics, "dserve:request_success_total", "finished_reason=\"abort\""),
            static_cast<double>(kClients));
}

TEST(HttpApiTest, MetricsExposeLatencyAndExpertLoad) {
  ASSERT_EQ(Post("/v1/completions", Completion(10, 4).dump()).status, 200);
  HttpResponse m = Get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.Header("content-type").find("text/plain"), std::string::npos);
  for (const char* family :
       {"dserve:time_to_first_token_seconds_bucket", "dserve:inter_token_latency_seconds_bucket",
        "dserve:e2e_request_latency_seconds_count", "dserve:num_requests_waiting",
        "dserve:kv_cache_usage_perc", "dserve:prompt_tokens_total",
        "dserve:generation_tokens_total", "dserve:prefix_cache_hit_rate",
        "dserve:num_preemptions_total", "dserve:moe_expert_tokens_total{",
        "dserve:moe_expert_load_imbalance{"}) {
    EXPECT_NE(m.body.find(family), std::string::npos) << family;
  }
  EXPECT_GT(MetricValue(m.body, "dserve:generation_tokens_total"), 0.0);
  // Every request that ran reports how long it waited to be scheduled (one cancelled while
  // still queued has no such time).
  EXPECT_GT(MetricValue(m.body, "dserve:request_queue_time_seconds_count"), 0.0);
  EXPECT_LE(MetricValue(m.body, "dserve:request_queue_time_seconds_count"),
            MetricValue(m.body, "dserve:e2e_request_latency_seconds_count"));
}

// Auth and the queue limit need their own router over the shared service and engine.
class SecondServer {
 public:
  SecondServer(RouterConfig router_config, int64_t max_queue, HttpOptions options = {}) {
    ServiceConfig sc = SharedEnv().service().config();
    sc.max_queue = max_queue;
    service_ = std::make_unique<GenerationService>(
        SharedEnv().engine(), SharedEnv().service().tokenizer(), nullptr, &SharedEnv().metrics(),
        sc);
    router_ = std::make_unique<OpenAiRouter>(*service_, SharedEnv().metrics(), router_config);
    options.port = 0;
    OpenAiRouter* router = router_.get();
    auto http = HttpServer::Start(
        [router](const HttpRequest& r, std::shared_ptr<ResponseChannel> c) {
          router->Handle(r, std::move(c));
        },
        options);
    EXPECT_TRUE(http.ok());
    http_ = *std::move(http);
  }
  int port() const { return http_->port(); }

 private:
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<OpenAiRouter> router_;
  std::unique_ptr<HttpServer> http_;
};

TEST(HttpApiTest, ApiKeyGuardsEveryRouteButHealth) {
  SecondServer server(RouterConfig{"sekret", 0}, 1024);
  HttpClient c("127.0.0.1", server.port());
  const std::string body = Completion(4, 2).dump();
  auto none = c.Request("POST", "/v1/completions", body);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["type"], "authentication_error");
  auto wrong = c.Request("GET", "/v1/models", "", {{"Authorization", "Bearer nope"}});
  EXPECT_EQ(wrong->status, 401);
  auto metrics = c.Request("GET", "/metrics", "");
  EXPECT_EQ(metrics->status, 401);
  auto right = c.Request("POST", "/v1/completions", body, {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(right->status, 200) << right->body;
  auto health = c.Request("GET", "/health", "");
  EXPECT_EQ(health->status, 200);
}

TEST(HttpApiTest, FullQueueGets429WithRetryAfter) {
  SecondServer server(RouterConfig{"", 0}, /*max_queue=*/0);
  HttpClient c("127.0.0.1", server.port());
  auto r = c.Request("POST", "/v1/completions", Completion(4, 2).dump());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->Header("retry-after"), "1");
  EXPECT_TRUE(json::parse(r->body).contains("error"));
}

TEST(HttpApiTest, HeadHasNoBodyAndPipelinedRequestsAreAnsweredInOrder) {
  RawConnection c;
  ASSERT_TRUE(c.connected());
  // Two requests in one write: HEAD, then GET; the second must not be mistaken for the first's
  // body, and the HEAD answer must carry none.
  c.Send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n"
         "Connection: close\r\n\r\n");
  const std::string both = c.ReadAll();
  ASSERT_EQ(StatusOf(both), 200) << both;
  const size_t second = both.find("HTTP/1.1 ", 1);
  ASSERT_NE(second, std::string::npos) << both;
  EXPECT_EQ(both.substr(second - 4, 4), "\r\n\r\n");  // nothing between the two heads
  EXPECT_EQ(StatusOf(both.substr(second)), 200);
  EXPECT_NE(both.find("\"tiny-v3\"", second), std::string::npos);
}

TEST(HttpApiTest, Http10ClientsGetAStreamWithoutChunking) {
  RawConnection c;
  ASSERT_TRUE(c.connected());
  json body = Completion(8, 3);
  body["stream"] = true;
  const std::string payload = body.dump();
  c.Send("POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(payload.size()) + "\r\n\r\n" + payload);
  const std::string response = c.ReadAll();  // ends when the server closes
  EXPECT_EQ(response.rfind("HTTP/1.0 200", 0), 0u) << response.substr(0, 300);
  EXPECT_EQ(response.find("Transfer-Encoding"), std::string::npos);
  const std::string stream = BodyOf(response);
  EXPECT_EQ(stream.rfind("data: {", 0), 0u) << stream.substr(0, 200);
  EXPECT_NE(stream.find("data: [DONE]\n\n"), std::string::npos);
}

TEST(HttpApiTest, ClientThatStopsReadingIsCutOffAndItsGenerationCancelled) {
  ASSERT_TRUE(WaitForNoPagesInUse(10000));
  HttpOptions options;
  options.write_timeout = std::chrono::milliseconds(300);
  options.max_queued_bytes = 256 << 10;
  options.socket_send_buffer = 16 << 10;
  SecondServer server(RouterConfig{"", 0}, 1024, options);
  RawConnection c(server.port(), /*receive_buffer=*/4096);
  ASSERT_TRUE(c.connected());
  json body = Completion(8, 100000);
  body["stream"] = true;
  body["logprobs"] = 20;  // about 2 KB per token: the socket buffers fill within a second
  const std::string payload = body.dump();
  c.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
         std::to_string(payload.size()) + "\r\n\r\n" + payload);
  // It runs first (pages held) ...
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (SharedEnv().engine().gauges().kv_used_pages == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GT(SharedEnv().engine().gauges().kv_used_pages, 0);
  // ... and, as the client never reads, the server gives up on it and frees them.
  EXPECT_TRUE(WaitForNoPagesInUse(30000));
}

}  // namespace
}  // namespace dserve::server::testing
