// dserve bench-serve: a load generator against a running OpenAI-compatible server — random
// prompts of exact lengths at C requests in flight; throughput and TTFT / ITL / E2E latency.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/http_client.h"
#include "cli/model_session.h"
#include "cli/percentiles.h"
#include "core/check.h"
#include "nlohmann/json.hpp"

namespace dserve::cli {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kCommand = "bench-serve";

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Config {
  Url url;
  std::string model;
  Headers headers;  // Authorization, when --api-key is given
  int64_t num_prompts = 0, input_len = 0, output_len = 0;
  bool stream = false;
  std::chrono::milliseconds timeout{0};
  std::string Target() const { return url.path_prefix + "/v1/completions"; }
};

// What one request measured. Latencies of failed requests are not reported.
struct Sample {
  bool ok = false;
  std::string error;
  double e2e_ms = 0;
  double ttft_ms = -1;  // < 0: no content event arrived
  std::vector<double> itl_ms;
  int64_t prompt_tokens = 0, output_tokens = 0;
};

struct Figures {
  int64_t concurrency = 0, ok = 0, errors = 0, prompt_tokens = 0, output_tokens = 0;
  double wall = 0;
  Percentiles ttft, itl, e2e;
  std::string first_error;
};

// At most ~200 bytes, cut at a UTF-8 character boundary.
std::string Clip(std::string_view s) {
  if (s.size() <= 200) return std::string(s);
  size_t end = 200;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(std::string(s.substr(0, end)), "...");
}

std::string ErrorMessage(const json& j) {
  const auto e = j.find("error");
  if (e != j.end() && e->is_object()) {
    const auto m = e->find("message");
    if (m != e->end() && m->is_string()) return m->get<std::string>();
  }
  return Clip(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

// "HTTP 404: <the error's message>" for a non-200 answer (errors are OpenAI-style JSON).
std::string HttpError(const HttpResponse& r) {
  const json j = json::parse(r.body.begin(), r.body.end(), nullptr, false);
  const std::string what = !j.is_discarded() && j.is_object() ? ErrorMessage(j) : Clip(r.body);
  return absl::StrCat("HTTP ", r.status, ": ", what);
}

// Takes the usage object when j carries one (a streamed usage chunk, or a whole answer).
bool ReadUsage(const json& j, Sample* s) {
  const auto u = j.find("usage");
  if (u == j.end() || !u->is_object()) return false;
  s->prompt_tokens = u->value("prompt_tokens", int64_t{0});
  s->output_tokens = u->value("completion_tokens", int64_t{0});
  return true;
}

bool HasText(const json& j) {
  const auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array()) return false;
  for (const json& c : *choices) {
    const auto t = c.find("text");
    if (t != c.end() && t->is_string() && !t->get_ref<const std::string&>().empty()) return true;
  }
  return false;
}

std::string RequestBody(const Config& c, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  json j = {{"model", c.model},   {"prompt", prompt}, {"max_tokens", max_tokens},
            {"ignore_eos", true}, {"temperature", 0}, {"stream", c.stream}};
  if (c.stream) j["stream_options"] = {{"include_usage", true}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Sample Streamed(HttpClient& client, const Config& c, const std::string& body) {
  Sample s;
  bool done = false, usage = false;
  std::string event_error;
  Clock::time_point last;
  const Clock::time_point start = Clock::now();
  auto r = client.Stream(
      c.Target(), body,
      [&](std::string_view data) {
        const Clock::time_point now = Clock::now();
        done = data == "[DONE]";  // it must be the last event
        if (done) return true;
        const json j = json::parse(data.begin(), data.end(), nullptr, false);
        if (j.is_discarded() || !j.is_object()) {
          if (event_error.empty()) event_error = absl::StrCat("unparseable event: ", Clip(data));
          return true;
        }
        if (j.contains("error")) {  // the generation failed after the 200 was sent
          if (event_error.empty()) event_error = ErrorMessage(j);
          return true;
        }
        usage |= ReadUsage(j, &s);
        if (!HasText(j)) return true;
        if (s.ttft_ms < 0) {
          s.ttft_ms = Ms(now - start);
        } else {
          s.itl_ms.push_back(Ms(now - last));
        }
        last = now;
        return true;
      },
      c.headers);
  s.e2e_ms = Ms(Clock::now() - start);
  if (!r.ok()) {
    s.error = std::string(r.status().message());
  } else if (r->status != 200) {
    s.error = HttpError(*r);
  } else if (!event_error.empty()) {
    s.error = event_error;
  } else if (!done) {
    s.error = "stream ended without data: [DONE]";
  } else if (!usage) {
    s.error = "stream without a usage chunk (stream_options.include_usage ignored?)";
  } else {
    s.ok = true;
  }
  return s;
}

Sample Whole(HttpClient& client, const Config& c, const std::string& body) {
  Sample s;
  const Clock::time_point start = Clock::now();
  auto r = client.Request("POST", c.Target(), body, c.headers);
  s.e2e_ms = Ms(Clock::now() - start);
  if (!r.ok()) {
    s.error = std::string(r.status().message());
    return s;
  }
  if (r->status != 200) {
    s.error = HttpError(*r);
    return s;
  }
  const json j = json::parse(r->body.begin(), r->body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    s.error = absl::StrCat("unparseable answer: ", Clip(r->body));
  } else if (!ReadUsage(j, &s)) {
    s.error = "answer without usage";
  } else {
    s.ok = true;
  }
  return s;
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int64_t len) {
  // Uniform in [100, 1000): past the special tokens and inside any real vocabulary (and the
  // small test models'); random prompts share no prefix worth caching.
  std::uniform_int_distribution<int32_t> id(100, 999);
  std::vector<int32_t> prompt(len);
  for (int32_t& t : prompt) t = id(rng);
  return prompt;
}

// One run at `concurrency`: every worker thread has its own connection and takes the next
// prompt until none is left. Prompts are drawn from `rng`, so later runs get fresh ones (no
// prefix-cache hits from an earlier run).
Figures RunOnce(const Config& c, int64_t concurrency, std::mt19937& rng) {
  const int64_t n = c.num_prompts;
  std::vector<std::string> bodies(n);  // built before the clock starts
  for (std::string& b : bodies) b = RequestBody(c, RandomPrompt(rng, c.input_len), c.output_len);

  std::vector<Sample> samples(n);
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mu;
  std::string first_error;  // in time, not by index
  const Clock::time_point start = Clock::now();
  auto work = [&] {
    HttpClient client(c.url.host, c.url.port);
    client.SetTimeout(c.timeout);
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      samples[i] = c.stream ? Streamed(client, c, bodies[i]) : Whole(client, c, bodies[i]);
      if (!samples[i].ok) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.empty()) first_error = samples[i].error;
      }
      const int64_t d = done.fetch_add(1) + 1;
      if (d * 10 / n != (d - 1) * 10 / n) {  // crossed a tenth
        std::fprintf(stderr,
                     "dserve %s: %3lld%% (%lld of %lld requests, concurrency %lld) %.1f s\n",
                     kCommand, static_cast<long long>(d * 100 / n), static_cast<long long>(d),
                     static_cast<long long>(n), static_cast<long long>(concurrency),
                     Ms(Clock::now() - start) / 1000);
      }
    }
  };
  std::vector<std::thread> workers;
  for (int64_t t = 0; t < std::min(concurrency, n); ++t) workers.emplace_back(work);
  for (std::thread& w : workers) w.join();

  Figures f;
  f.concurrency = concurrency;
  f.wall = Ms(Clock::now() - start) / 1000;
  f.first_error = first_error;
  std::vector<double> ttft, itl, e2e;
  for (const Sample& s : samples) {
    if (!s.ok) {
      ++f.errors;
      continue;
    }
    ++f.ok;
    f.prompt_tokens += s.prompt_tokens;
    f.output_tokens += s.output_tokens;
    e2e.push_back(s.e2e_ms);
    if (s.ttft_ms >= 0) ttft.push_back(s.ttft_ms);
    itl.insert(itl.end(), s.itl_ms.begin(), s.itl_ms.end());
  }
  f.ttft = Summarise(ttft);
  f.itl = Summarise(itl);
  f.e2e = Summarise(e2e);
  return f;
}

nlohmann::ordered_json ToJson(const Config& c, const Figures& f) {
  auto pct = [](const Percentiles& p) {
    return nlohmann::ordered_json{{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}};
  };
  const nlohmann::ordered_json none = nullptr;
  return {
      {"concurrency", f.concurrency},
      {"num_prompts", c.num_prompts},
      {"input_len", c.input_len},
      {"output_len", c.output_len},
      {"stream", c.stream},
      {"requests", f.ok},
      {"errors", f.errors},
      {"wall_s", f.wall},
      {"request_throughput", f.ok / f.wall},
      {"output_tokens_per_s", f.output_tokens / f.wall},
      {"total_tokens_per_s", (f.prompt_tokens + f.output_tokens) / f.wall},
      {"prompt_tokens", f.prompt_tokens},
      {"output_tokens", f.output_tokens},
      {"ttft_ms", c.stream ? pct(f.ttft) : none},
      {"itl_ms", c.stream ? pct(f.itl) : none},
      {"e2e_ms", pct(f.e2e)},
      {"first_error", f.first_error.empty() ? none : nlohmann::ordered_json(f.first_error)},
  };
}

void Print(const Config& c, const Figures& f) {
  std::printf(
      "requests         %lld ok, %lld errors (prompt %lld tokens, output %lld), "
      "concurrency %lld, %s\n",
      static_cast<long long>(f.ok), static_cast<long long>(f.errors),
      static_cast<long long>(c.input_len), static_cast<long long>(c.output_len),
      static_cast<long long>(f.concurrency), c.stream ? "streaming" : "not streaming");
  std::printf("wall             %.2f s\n", f.wall);
  std::printf("throughput       %.2f requests/s, output %.1f tokens/s, total %.1f tokens/s\n",
              f.ok / f.wall, f.output_tokens / f.wall,
              (f.prompt_tokens + f.output_tokens) / f.wall);
  if (c.stream) {
    std::printf("TTFT             p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n", f.ttft.p50, f.ttft.p90,
                f.ttft.p99);
    std::printf("ITL              p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", f.itl.p50, f.itl.p90,
                f.itl.p99);
  }
  std::printf("E2E              p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n", f.e2e.p50, f.e2e.p90,
              f.e2e.p99);
  if (!f.first_error.empty()) std::printf("first error      %s\n", f.first_error.c_str());
}

// --model not given: the first model the server lists.
absl::StatusOr<std::string> FirstModel(const Config& c) {
  HttpClient client(c.url.host, c.url.port);
  client.SetTimeout(c.timeout);
  DSERVE_ASSIGN_OR_RETURN(HttpResponse r,
                          client.Request("GET", c.url.path_prefix + "/v1/models", "", c.headers));
  if (r.status != 200) {
    return absl::FailedPreconditionError(absl::StrCat("GET /v1/models: ", HttpError(r)));
  }
  const json j = json::parse(r.body.begin(), r.body.end(), nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("data") && j["data"].is_array() &&
      !j["data"].empty() && j["data"][0].is_object() && j["data"][0].contains("id") &&
      j["data"][0]["id"].is_string()) {
    return j["data"][0]["id"].get<std::string>();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("GET /v1/models listed no model (pass --model): ", Clip(r.body)));
}

absl::StatusOr<std::vector<int64_t>> ParseConcurrency(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v) || v < 1 || v > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("--concurrency: '", std::string(item), "' must be an integer in [1, 4096]"));
    }
    out.push_back(v);
  }
  return out;
}

absl::Status Run(const Flags& flags, bool* some_run_failed) {
  Config c;
  DSERVE_ASSIGN_OR_RETURN(c.url, Url::Parse(flags.Get("url")));
  DSERVE_ASSIGN_OR_RETURN(const std::vector<int64_t> concurrencies,
                          ParseConcurrency(flags.Get("concurrency")));
  DSERVE_ASSIGN_OR_RETURN(c.num_prompts, flags.GetInt("num-prompts", 1, 1 << 24));
  DSERVE_ASSIGN_OR_RETURN(c.input_len, flags.GetInt("input-len", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(c.output_len, flags.GetInt("output-len", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(const int64_t seed, flags.GetInt("seed", 0, 0xFFFFFFFFll));
  DSERVE_ASSIGN_OR_RETURN(const int64_t timeout_s, flags.GetInt("timeout", 1, 86400));
  c.timeout = std::chrono::seconds(timeout_s);
  c.stream = flags.GetBool("stream");
  if (!flags.Get("api-key").empty()) {
    c.headers.emplace_back("Authorization", absl::StrCat("Bearer ", flags.Get("api-key")));
  }
  c.model = flags.Get("model");
  if (c.model.empty()) {
    DSERVE_ASSIGN_OR_RETURN(c.model, FirstModel(c));
  }

  // One untimed request first: it fails fast on a wrong model, key or URL, and takes the
  // first-request costs out of the figures. Its prompt comes from its own generator.
  {
    std::mt19937 warm_rng(static_cast<uint32_t>(seed) ^ 0x5bd1e995u);
    const std::string body =
        RequestBody(c, RandomPrompt(warm_rng, c.input_len), std::min<int64_t>(c.output_len, 4));
    HttpClient client(c.url.host, c.url.port);
    client.SetTimeout(c.timeout);
    const Sample s = c.stream ? Streamed(client, c, body) : Whole(client, c, body);
    if (!s.ok) {
      return absl::FailedPreconditionError(absl::StrCat("warm-up request failed: ", s.error));
    }
  }

  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<Figures> runs;
  for (int64_t concurrency : concurrencies) runs.push_back(RunOnce(c, concurrency, rng));

  if (flags.GetBool("json")) {
    if (runs.size() == 1) {
      std::printf("%s\n", ToJson(c, runs[0]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      nlohmann::ordered_json all = nlohmann::ordered_json::array();
      for (const Figures& f : runs) all.push_back(ToJson(c, f));
      std::printf("%s\n", nlohmann::ordered_json{{"runs", all}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
  } else {
    for (size_t i = 0; i < runs.size(); ++i) {
      if (i > 0) std::printf("\n");
      Print(c, runs[i]);
    }
  }
  std::fflush(stdout);
  for (const Figures& f : runs) {
    if (f.ok > 0) continue;
    *some_run_failed = true;
    std::fprintf(stderr, "dserve %s: every request failed at concurrency %lld: %s\n", kCommand,
                 static_cast<long long>(f.concurrency), f.first_error.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int RunBenchServe(const Args& args) {
  const std::vector<FlagSpec> specs = {
      {"url", "the server, e.g. http://127.0.0.1:8000", "", false, true},
      {"model", "served model name (default: the first of GET /v1/models)", ""},
      {"concurrency", "requests in flight; a list (1,16,64) runs each in turn", "16"},
      {"num-prompts", "requests per run", "64"},
      {"input-len", "prompt tokens per request (random ids)", "128"},
      {"output-len", "generated tokens per request (ignore_eos)", "128"},
      {"stream", "stream the answers (SSE): adds TTFT and inter-token latency", "", true},
      {"api-key", "sent as 'Authorization: Bearer <key>'", ""},
      {"seed", "seed of the random prompts", "0"},
      {"timeout", "seconds one request may take in all", "600"},
      {"json", "print the figures as JSON", "", true},
  };
  Flags flags;
  int code;
  if (!ParseOrExit(kCommand,
                   "Load generator against a running server: throughput, TTFT, inter-token and "
                   "end-to-end latency of /v1/completions under concurrent requests.",
                   specs, args, &flags, &code)) {
    return code;
  }
  bool some_run_failed = false;
  if (absl::Status s = Run(flags, &some_run_failed); !s.ok()) return ReportError(kCommand, s);
  return some_run_failed ? 1 : 0;
}

}  // namespace dserve::cli
