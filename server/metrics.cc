// Prometheus instruments and the /metrics exposition text (format 0.0.4) built from them.
// Names follow vLLM's (prefix "dserve:" instead of "vllm:") so existing dashboards carry over.
#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <limits>

#include "core/check.h"

namespace dserve::server {

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), buckets_(upper_bounds_.size() + 1) {
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    DSERVE_CHECK(std::isfinite(upper_bounds_[i]))
        << "histogram bound " << i << " must be finite (+Inf is implicit), got "
        << upper_bounds_[i];
    DSERVE_CHECK(i == 0 || upper_bounds_[i - 1] < upper_bounds_[i])
        << "histogram bounds must be strictly increasing, got " << upper_bounds_[i - 1] << " then "
        << upper_bounds_[i];
  }
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // Buckets are "less than or equal": the first bound >= value. Past the last bound: +Inf.
  const size_t bucket =
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin();
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  snapshot.cumulative.resize(buckets_.size());
  uint64_t running = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    snapshot.cumulative[i] = running;
  }
  // Observations racing with this scrape may be in the buckets but not yet in the sum (or the
  // other way round); the next scrape catches up. Count comes from the buckets so the
  // exposition is never self-contradictory (+Inf bucket == _count).
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

CounterFamily::CounterFamily(std::string label_name, std::vector<std::string> preset_values)
    : label_name_(std::move(label_name)) {
  preset_.reserve(preset_values.size());
  for (std::string& value : preset_values) {
    preset_.emplace_back(std::move(value), std::make_unique<Counter>());
  }
}

Counter& CounterFamily::WithLabel(std::string_view value) {
  for (const auto& [preset_value, counter] : preset_) {
    if (preset_value == value) return *counter;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = created_.find(value);
  if (it == created_.end()) {
    it = created_.emplace(std::string(value), std::make_unique<Counter>()).first;
  }
  return *it->second;
}

std::vector<std::pair<std::string, int64_t>> CounterFamily::Collect() const {
  std::vector<std::pair<std::string, int64_t>> values;
  for (const auto& [value, counter] : preset_) values.emplace_back(value, counter->Value());
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [value, counter] : created_) values.emplace_back(value, counter->Value());
  return values;
}

std::vector<double> TimeToFirstTokenBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
          1,     2.5,   5,    7.5,  10,   20,   40,   80,  160,  640, 2560};
}

std::vector<double> InterTokenLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
          0.4,   0.5,    0.75,  1,    2.5,   5,    7.5,   10,  20,   40,  80};
}

std::vector<double> RequestLatencyBuckets() {
  return {0.3, 0.5, 0.8, 1,  1.5, 2,   2.5, 5,   10,   15,  20,
          30,  40,  50,  60, 120, 240, 480, 960, 1920, 7680};
}

std::vector<double> RequestTokenBuckets() {
  return {1,    2,    5,    10,    20,    50,    100,    200,   500,
          1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000};
}

double ExpertLoadImbalance(const std::vector<int64_t>& tokens_per_expert) {
  int64_t total = 0;
  int64_t max = 0;
  for (int64_t tokens : tokens_per_expert) {
    total += tokens;
    max = std::max(max, tokens);
  }
  if (total <= 0) return 0.0;
  const double mean = static_cast<double>(total) / static_cast<double>(tokens_per_expert.size());
  return static_cast<double>(max) / mean;
}

namespace {

// Prometheus reads sample values with Go's ParseFloat and special-cases Inf/NaN spellings.
// Integral values are written as integers: the shortest round-trip form would turn 100000
// into "1e+05", which parses but reads badly in le labels and in `curl /metrics`.
std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  std::to_chars_result result;
  constexpr double kExactIntegerLimit = 9007199254740992.0;  // 2^53
  if (value == std::trunc(value) && std::fabs(value) < kExactIntegerLimit) {
    result = std::to_chars(buffer, buffer + sizeof(buffer), static_cast<int64_t>(value));
  } else {
    result = std::to_chars(buffer, buffer + sizeof(buffer), value);  // shortest round-trip
  }
  return std::string(buffer, result.ptr);
}

std::string FormatValue(int64_t value) { return std::to_string(value); }
std::string FormatValue(uint64_t value) { return std::to_string(value); }

// Label values escape backslash, double quote and newline; HELP text only backslash and
// newline (text format 0.0.4).
void AppendEscaped(std::string& out, std::string_view text, bool escape_quote) {
  for (char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '"':
        out += escape_quote ? "\\\"" : "\"";
        break;
      default:
        out += c;
    }
  }
}

struct Label {
  std::string_view name;
  std::string_view value;
};

class TextWriter {
 public:
  explicit TextWriter(std::string_view model_name) : model_name_(model_name) {}

  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    AppendEscaped(out_, help, /*escape_quote=*/false);
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  template <typename T>
  void Sample(std::string_view name, std::initializer_list<Label> labels, T value) {
    out_ += name;
    bool first = true;
    auto append_label = [&](const Label& label) {
      out_ += first ? '{' : ',';
      first = false;
      out_ += label.name;
      out_ += "=\"";
      AppendEscaped(out_, label.value, /*escape_quote=*/true);
      out_ += '"';
    };
    if (!model_name_.empty()) append_label({"model_name", model_name_});
    for (const Label& label : labels) append_label(label);
    if (!first) out_ += '}';
    out_ += ' ';
    out_ += FormatValue(value);
    out_ += '\n';
  }

  void AddGauge(std::string_view name, std::string_view help, double value) {
    Family(name, "gauge", help);
    Sample(name, {}, value);
  }

  void AddCounter(std::string_view name, std::string_view help, int64_t value) {
    Family(name, "counter", help);
    Sample(name, {}, value);
  }

  void AddCounters(std::string_view name, std::string_view help, const CounterFamily& family) {
    Family(name, "counter", help);
    for (const auto& [value, count] : family.Collect()) {
      Sample(name, {{family.label_name(), value}}, count);
    }
  }

  void AddHistogram(std::string_view name, std::string_view help, const Histogram& histogram) {
    Family(name, "histogram", help);
    const Histogram::Snapshot snapshot = histogram.Collect();
    const std::string bucket_name = std::string(name) + "_bucket";
    for (size_t i = 0; i < snapshot.upper_bounds.size(); ++i) {
      const std::string le = FormatValue(snapshot.upper_bounds[i]);
      Sample(bucket_name, {{"le", le}}, snapshot.cumulative[i]);
    }
    Sample(bucket_name, {{"le", "+Inf"}}, snapshot.count);
    Sample(std::string(name) + "_sum", {}, snapshot.sum);
    Sample(std::string(name) + "_count", {}, snapshot.count);
  }

  std::string Take() { return std::move(out_); }

 private:
  std::string_view model_name_;
  std::string out_;
};

}  // namespace

ServerMetrics::ServerMetrics(ServerMetricsOptions options)
    : options_(std::move(options)),
      time_to_first_token_(TimeToFirstTokenBuckets()),
      inter_token_latency_(InterTokenLatencyBuckets()),
      e2e_latency_(RequestLatencyBuckets()),
      queue_time_(RequestLatencyBuckets()),
      request_prompt_tokens_(RequestTokenBuckets()),
      request_generation_tokens_(RequestTokenBuckets()),
      request_success_("finished_reason", {"stop", "length", "abort", "error", "tool_calls"}),
      request_rejected_("code", {}) {}

void ServerMetrics::ObserveTimeToFirstToken(double seconds) {
  time_to_first_token_.Observe(seconds);
}
void ServerMetrics::ObserveInterTokenLatency(double seconds) {
  inter_token_latency_.Observe(seconds);
}
void ServerMetrics::ObserveE2eLatency(double seconds) { e2e_latency_.Observe(seconds); }
void ServerMetrics::ObserveQueueTime(double seconds) { queue_time_.Observe(seconds); }

void ServerMetrics::AddPromptTokens(int64_t tokens) {
  prompt_tokens_.Add(tokens);
  prefix_cache_queries_.Add(tokens);
}
void ServerMetrics::AddGenerationTokens(int64_t tokens) { generation_tokens_.Add(tokens); }
void ServerMetrics::AddCachedPromptTokens(int64_t tokens) { prefix_cache_hits_.Add(tokens); }

void ServerMetrics::ObserveRequestTokens(int64_t prompt_tokens, int64_t generation_tokens) {
  request_prompt_tokens_.Observe(static_cast<double>(prompt_tokens));
  request_generation_tokens_.Observe(static_cast<double>(generation_tokens));
}

void ServerMetrics::RequestFinished(std::string_view finish_reason) {
  request_success_.WithLabel(finish_reason).Increment();
}

void ServerMetrics::RequestRejected(int http_status) {
  request_rejected_.WithLabel(std::to_string(http_status)).Increment();
}

void ServerMetrics::SetEngineStateSource(std::function<EngineState()> source) {
  std::lock_guard<std::mutex> lock(source_mutex_);
  engine_state_source_ = std::move(source);
}

std::string ServerMetrics::Render() const {
  // Copy the source out so the engine's snapshot (which may take the engine's own lock) runs
  // without ours held.
  std::function<EngineState()> source;
  {
    std::lock_guard<std::mutex> lock(source_mutex_);
    source = engine_state_source_;
  }
  const EngineState state = source ? source() : EngineState{};

  TextWriter w(options_.model_name);
  w.AddGauge("dserve:num_requests_running", "Number of requests in model execution batches.",
             static_cast<double>(state.num_running));
  w.AddGauge("dserve:num_requests_waiting", "Number of requests waiting to be processed.",
             static_cast<double>(state.num_waiting));
  w.AddGauge("dserve:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
             state.kv_pages_total > 0 ? static_cast<double>(state.kv_pages_used) /
                                            static_cast<double>(state.kv_pages_total)
                                      : 0.0);
  w.AddGauge("dserve:kv_cache_used_pages", "KV-cache pages in use.",
             static_cast<double>(state.kv_pages_used));
  w.AddGauge("dserve:kv_cache_total_pages", "KV-cache pages in the pool.",
             static_cast<double>(state.kv_pages_total));
  w.AddCounter("dserve:num_preemptions_total", "Cumulative number of preemptions from the engine.",
               state.num_preemptions);
  w.AddCounter("dserve:spec_decode_num_drafts_total",
               "Number of speculative verifications (one sequence's MTP drafts checked in a step).",
               state.verifications);
  w.AddCounter("dserve:spec_decode_num_draft_tokens_total",
               "Number of MTP draft tokens checked by speculative decoding.", state.draft_tokens);
  w.AddCounter("dserve:spec_decode_num_accepted_tokens_total",
               "Number of MTP draft tokens accepted by speculative decoding.",
               state.accepted_draft_tokens);
  if (!state.accepted_at.empty()) {
    w.Family("dserve:spec_decode_num_accepted_tokens_per_pos_total", "counter",
             "Accepted MTP draft tokens by draft position (0: the first draft).");
    for (size_t j = 0; j < state.accepted_at.size(); ++j) {
      w.Sample("dserve:spec_decode_num_accepted_tokens_per_pos_total",
               {{"position", std::to_string(j)}},
               state.accepted_at[j]);
    }
  }

  w.AddCounter("dserve:prompt_tokens_total", "Number of prefill tokens processed.",
               prompt_tokens_.Value());
  w.AddCounter("dserve:generation_tokens_total", "Number of generation tokens processed.",
               generation_tokens_.Value());
  const int64_t queries = prefix_cache_queries_.Value();
  const int64_t hits = prefix_cache_hits_.Value();
  w.AddCounter("dserve:prefix_cache_queries_total",
               "Prefix cache queries, in terms of number of queried tokens.", queries);
  w.AddCounter("dserve:prefix_cache_hits_total",
               "Prefix cache hits, in terms of number of cached tokens.", hits);
  w.AddGauge("dserve:prefix_cache_hit_rate",
             "Prefix cache hits / queries since start, in tokens (0 when no queries).",
             queries > 0 ? static_cast<double>(hits) / static_cast<double>(queries) : 0.0);

  w.AddCounters("dserve:request_success_total", "Count of successfully processed requests.",
                request_success_);
  w.AddCounters("dserve:request_rejected_total",
                "Count of requests rejected before reaching the engine, by HTTP status.",
                request_rejected_);

  w.AddHistogram("dserve:time_to_first_token_seconds",
                 "Histogram of time to first token in seconds.", time_to_first_token_);
  w.AddHistogram("dserve:inter_token_latency_seconds",
                 "Histogram of inter-token latency in seconds.", inter_token_latency_);
  w.AddHistogram("dserve:e2e_request_latency_seconds",
                 "Histogram of e2e request latency in seconds.", e2e_latency_);
  w.AddHistogram("dserve:request_queue_time_seconds",
                 "Histogram of time spent in WAITING phase for request.", queue_time_);
  w.AddHistogram("dserve:request_prompt_tokens", "Number of prefill tokens processed.",
                 request_prompt_tokens_);
  w.AddHistogram("dserve:request_generation_tokens", "Number of generation tokens processed.",
                 request_generation_tokens_);

  // A layer's label is its model layer number when the engine says so, else its MoE index.
  auto layer_label = [&state](size_t i) {
    return std::to_string(i < state.expert_layers.size() ? state.expert_layers[i]
                                                         : static_cast<int>(i));
  };
  w.Family("dserve:moe_expert_tokens_total", "counter",
           "Tokens routed to each expert of each MoE layer.");
  for (size_t i = 0; i < state.expert_tokens.size(); ++i) {
    const std::string layer = layer_label(i);
    for (size_t e = 0; e < state.expert_tokens[i].size(); ++e) {
      const std::string expert = std::to_string(e);
      w.Sample("dserve:moe_expert_tokens_total", {{"layer", layer}, {"expert", expert}},
               state.expert_tokens[i][e]);
    }
  }
  if (state.ep_size > 1) {
    w.Family("dserve:moe_rank_tokens_total", "counter",
             "Tokens routed to the experts each expert-parallel rank holds, per MoE layer.");
    for (size_t i = 0; i < state.expert_tokens.size(); ++i) {
      const std::string layer = layer_label(i);
      const std::vector<int64_t>& tokens = state.expert_tokens[i];
      const size_t per = tokens.size() / static_cast<size_t>(state.ep_size);
      for (int r = 0; r < state.ep_size; ++r) {
        int64_t sum = 0;
        for (size_t e = r * per; e < (r + 1) * per && e < tokens.size(); ++e) sum += tokens[e];
        w.Sample("dserve:moe_rank_tokens_total", {{"layer", layer}, {"rank", std::to_string(r)}},
                 sum);
      }
    }
  }
  w.Family("dserve:moe_expert_load_imbalance", "gauge",
           "Max over mean tokens per expert of each MoE layer (1 is balanced, 0 no tokens).");
  for (size_t i = 0; i < state.expert_tokens.size(); ++i) {
    const std::string layer = layer_label(i);
    w.Sample("dserve:moe_expert_load_imbalance", {{"layer", layer}},
             ExpertLoadImbalance(state.expert_tokens[i]));
  }
  return w.Take();
}

}  // namespace dserve::server
