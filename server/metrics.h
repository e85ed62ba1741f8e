// The server's Prometheus metrics: lock-light instruments (Counter, Gauge, Histogram, labelled
// counter families) and ServerMetrics, which owns them and renders /metrics in text format 0.0.4.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dserve::server {

// A monotonically increasing integer count. Every counter we export counts whole things
// (tokens, requests), so an integer keeps concurrent sums exact and renders without exponent.
class Counter {
 public:
  // Negative amounts are ignored: a counter that goes down reads as a reset to Prometheus.
  void Add(int64_t amount) {
    if (amount > 0) value_.fetch_add(amount, std::memory_order_relaxed);
  }
  void Increment() { value_.fetch_add(1, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// A value that goes up and down, set directly by whoever knows it.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Fixed-bucket histogram. Observe is lock-free (one bucket increment and one CAS-add on the
// sum); the exported count is derived from the buckets so that +Inf always equals _count.
class Histogram {
 public:
  // upper_bounds: finite, strictly increasing; the +Inf bucket is implicit.
  explicit Histogram(std::vector<double> upper_bounds);

  // NaN is dropped: it would poison _sum for the life of the process.
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;  // as given, without +Inf
    std::vector<uint64_t> cumulative;  // size upper_bounds + 1; the last entry is +Inf
    double sum = 0.0;
    uint64_t count = 0;  // == cumulative.back()
  };
  Snapshot Collect() const;

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  std::vector<double> upper_bounds_;
  std::vector<std::atomic<uint64_t>> buckets_;  // per bucket (not cumulative); last is +Inf
  std::atomic<double> sum_{0.0};
};

// Counters sharing one label name, e.g. finished_reason. The preset values exist from the start
// (so dashboards see zeros) and are found without a lock; any other value is created on first
// use under a mutex, which is fine for label values that are rare or few.
class CounterFamily {
 public:
  CounterFamily(std::string label_name, std::vector<std::string> preset_values);

  // Stable for the life of the family.
  Counter& WithLabel(std::string_view value);

  const std::string& label_name() const { return label_name_; }
  // (label value, count): presets in the order given, then created values in byte order.
  std::vector<std::pair<std::string, int64_t>> Collect() const;

 private:
  std::string label_name_;
  std::vector<std::pair<std::string, std::unique_ptr<Counter>>> preset_;  // immutable after ctor
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Counter>, std::less<>> created_;  // guarded by mutex_
};

// What the engine reports at scrape time; counts in it are cumulative since start.
struct EngineState {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t kv_pages_used = 0;
  int64_t kv_pages_total = 0;
  int64_t num_preemptions = 0;
  // Speculative decoding: verifications (one sequence's drafts checked in a step), MTP drafts
  // checked and accepted so far, and accepted drafts by draft position (0: the first).
  int64_t verifications = 0;
  int64_t draft_tokens = 0;
  int64_t accepted_draft_tokens = 0;
  std::vector<int64_t> accepted_at;  // one entry per configured draft position
  std::vector<std::vector<int64_t>> expert_tokens;  // [moe layer index][expert] tokens routed
  std::vector<int> expert_layers;  // model layer number of each expert_tokens entry
  // Expert parallelism: ranks holding the routed experts in contiguous equal slices (rank r
  // holds experts [r * E / ep_size, (r + 1) * E / ep_size)); their load is exported per rank.
  int ep_size = 1;
};

struct ServerMetricsOptions {
  // When set, every sample carries model_name="..." as vLLM's do, so dashboards written for
  // vLLM work unchanged. Empty: no such label.
  std::string model_name;
};

// Bucket boundaries (vLLM's, ITL with three millisecond buckets in front for CPU decode steps).
std::vector<double> TimeToFirstTokenBuckets();
std::vector<double> InterTokenLatencyBuckets();
std::vector<double> RequestLatencyBuckets();  // e2e latency and queue time
std::vector<double> RequestTokenBuckets();    // per-request prompt and generation lengths

// max / mean tokens per expert of one MoE layer; 0 when the layer has routed no tokens.
double ExpertLoadImbalance(const std::vector<int64_t>& tokens_per_expert);

// Every metric the server exports, names as vLLM's with the "dserve:" prefix. One object, owned
// by the server; all methods may be called from any thread at any time.
class ServerMetrics {
 public:
  explicit ServerMetrics(ServerMetricsOptions options = {});
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  void ObserveE2eLatency(double seconds);
  void ObserveQueueTime(double seconds);

  // Counters only, so they may be called per step or per chunk. AddPromptTokens also counts
  // the tokens as prefix-cache queries (every prompt token is looked up in the cache).
  void AddPromptTokens(int64_t tokens);
  void AddGenerationTokens(int64_t tokens);
  void AddCachedPromptTokens(int64_t tokens);  // prompt tokens served from the prefix cache

  // Once per finished request: its prompt and generated lengths, for the per-request
  // histograms (kept apart from the Add* counters, which may be fed incrementally).
  void ObserveRequestTokens(int64_t prompt_tokens, int64_t generation_tokens);

  // "stop" | "length" | "abort" | "error" | "tool_calls" (other values get their own series).
  void RequestFinished(std::string_view finish_reason);
  // A request refused before it reached the engine, by HTTP status.
  void RequestRejected(int http_status);

  // Called by Render on the scraping thread; it must be safe to call from there. Meant to be
  // set once at startup; replacing it later is safe but races with a scrape in flight.
  void SetEngineStateSource(std::function<EngineState()> source);

  // The full exposition text (Content-Type: text/plain; version=0.0.4; charset=utf-8).
  std::string Render() const;

 private:
  ServerMetricsOptions options_;

  Histogram time_to_first_token_;
  Histogram inter_token_latency_;
  Histogram e2e_latency_;
  Histogram queue_time_;
  Histogram request_prompt_tokens_;
  Histogram request_generation_tokens_;

  Counter prompt_tokens_;
  Counter generation_tokens_;
  Counter prefix_cache_queries_;
  Counter prefix_cache_hits_;

  CounterFamily request_success_;
  CounterFamily request_rejected_;

  mutable std::mutex source_mutex_;
  std::function<EngineState()> engine_state_source_;  // guarded by source_mutex_
};

}  // namespace dserve::server
