// ServerMetrics (server/metrics.h): the rendered text is parsed back with a small text-format
// 0.0.4 parser written here, and checked for structure, histogram invariants and exact counts.
#include "server/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dserve::server {
namespace {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  Labels labels;
  std::string raw_value;  // as written, to check formatting
  double value = 0.0;
};

struct Exposition {
  std::map<std::string, std::string> help;  // family -> text (unescaped)
  std::map<std::string, std::string> type;  // family -> counter | gauge | histogram
  std::vector<std::string> families;        // in TYPE order
  std::vector<Sample> samples;

  // The one sample with exactly these labels; fails the test if there is not exactly one.
  const Sample* Find(const std::string& name, const Labels& labels = {}) const {
    const Sample* found = nullptr;
    int matches = 0;
    for (const Sample& s : samples) {
      if (s.name == name && s.labels == labels) {
        found = &s;
        ++matches;
      }
    }
    EXPECT_EQ(matches, 1) << name;
    return matches == 1 ? found : nullptr;
  }
  double Value(const std::string& name, const Labels& labels = {}) const {
    const Sample* s = Find(name, labels);
    return s ? s->value : std::nan("");
  }
  std::vector<const Sample*> All(const std::string& name) const {
    std::vector<const Sample*> out;
    for (const Sample& s : samples) {
      if (s.name == name) out.push_back(&s);
    }
    return out;
  }
};

// Unescapes \\, \" and \n; anything else after a backslash is malformed.
bool Unescape(const std::string& in, size_t& pos, char terminator, std::string& out) {
  while (pos < in.size()) {
    const char c = in[pos++];
    if (c == terminator) return true;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (pos >= in.size()) return false;
    const char e = in[pos++];
    if (e == '\\') {
      out += '\\';
    } else if (e == '"') {
      out += '"';
    } else if (e == 'n') {
      out += '\n';
    } else {
      return false;
    }
  }
  return terminator == '\0';
}

bool ParseSample(const std::string& line, Sample& sample) {
  size_t pos = line.find_first_of("{ ");
  if (pos == std::string::npos) return false;
  sample.name = line.substr(0, pos);
  if (line[pos] == '{') {
    ++pos;
    while (true) {
      const size_t eq = line.find('=', pos);
      if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') return false;
      const std::string label = line.substr(pos, eq - pos);
      pos = eq + 2;
      std::string value;
      if (!Unescape(line, pos, '"', value)) return false;
      if (!sample.labels.emplace(label, value).second) return false;  // duplicate label
      if (pos >= line.size()) return false;
      if (line[pos] == '}') {
        ++pos;
        break;
      }
      if (line[pos++] != ',') return false;
    }
  }
  if (pos >= line.size() || line[pos] != ' ') return false;
  sample.raw_value = line.substr(pos + 1);
  if (sample.raw_value.empty() || sample.raw_value.find(' ') != std::string::npos) return false;
  char* end = nullptr;
  sample.value = std::strtod(sample.raw_value.c_str(), &end);
  return *end == '\0';
}

// Parses the exposition, failing the test on anything a Prometheus scraper would reject or
// that breaks the grouping rules (HELP then TYPE before the family's samples, no repeats).
Exposition Parse(const std::string& text) {
  Exposition exp;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "exposition must end with a newline";
  static const std::regex kName("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex kLabelName("[a-zA-Z_][a-zA-Z0-9_]*");
  std::string current_family;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.rfind("# HELP ", 0) == 0) {
      const size_t space = line.find(' ', 7);
      EXPECT_NE(space, std::string::npos) << line;
      const std::string name = line.substr(7, space - 7);
      EXPECT_TRUE(std::regex_match(name, kName)) << line;
      EXPECT_EQ(exp.help.count(name), 0u) << "HELP repeated: " << name;
      std::string help;
      size_t pos = space + 1;
      EXPECT_TRUE(Unescape(line, pos, '\0', help)) << line;
      exp.help[name] = help;
      current_family = name;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      const size_t space = line.find(' ', 7);
      EXPECT_NE(space, std::string::npos) << line;
      const std::string name = line.substr(7, space - 7);
      const std::string type = line.substr(space + 1);
      EXPECT_EQ(name, current_family) << "TYPE without HELP just before it: " << line;
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << line;
      EXPECT_EQ(exp.type.count(name), 0u) << "TYPE repeated: " << name;
      exp.type[name] = type;
      exp.families.push_back(name);
      continue;
    }
    EXPECT_FALSE(line.empty()) << "blank line in exposition";
    EXPECT_NE(line[0], '#') << "unexpected comment: " << line;
    Sample sample;
    EXPECT_TRUE(ParseSample(line, sample)) << "malformed sample: " << line;
    EXPECT_TRUE(std::regex_match(sample.name, kName)) << line;
    for (const auto& [label, value] : sample.labels) {
      EXPECT_TRUE(std::regex_match(label, kLabelName)) << line;
    }
    // The sample must belong to the family declared just above it.
    std::string family = sample.name;
    if (exp.type.count(family) == 0) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string s(suffix);
        if (family.size() > s.size() &&
            family.compare(family.size() - s.size(), s.size(), s) == 0) {
          family.resize(family.size() - s.size());
          break;
        }
      }
      EXPECT_EQ(exp.type[family], "histogram") << line;
    }
    EXPECT_EQ(family, current_family) << "sample outside its family block: " << line;
    exp.samples.push_back(std::move(sample));
  }
  return exp;
}

const std::vector<std::string> kHistograms = {
    "dserve:time_to_first_token_seconds", "dserve:inter_token_latency_seconds",
    "dserve:e2e_request_latency_seconds", "dserve:request_queue_time_seconds",
    "dserve:request_prompt_tokens",       "dserve:request_generation_tokens"};

// Checks one histogram's invariants and returns its le bounds (without +Inf).
std::vector<double> CheckHistogram(const Exposition& exp, const std::string& name) {
  std::vector<double> bounds;
  const std::vector<const Sample*> buckets = exp.All(name + "_bucket");
  EXPECT_GE(buckets.size(), 2u) << name;
  if (buckets.empty()) return bounds;
  double previous_le = -INFINITY;
  double previous_count = 0;
  for (const Sample* b : buckets) {
    EXPECT_EQ(b->labels.count("le"), 1u) << name;
    const double le = std::strtod(b->labels.at("le").c_str(), nullptr);
    EXPECT_GT(le, previous_le) << name << " le out of order";
    EXPECT_GE(b->value, previous_count) << name << " buckets not cumulative at le=" << le;
    previous_le = le;
    previous_count = b->value;
    if (!std::isinf(le)) bounds.push_back(le);
  }
  EXPECT_EQ(buckets.back()->labels.at("le"), "+Inf") << name;
  EXPECT_EQ(buckets.back()->value, exp.Value(name + "_count")) << name;
  exp.Find(name + "_sum");
  return bounds;
}

double Bucket(const Exposition& exp, const std::string& name, const std::string& le) {
  return exp.Value(name + "_bucket", {{"le", le}});
}

TEST(ServerMetricsTest, EveryFamilyHasHelpAndType) {
  ServerMetrics metrics;
  metrics.RequestRejected(429);
  const Exposition exp = Parse(metrics.Render());
  const std::map<std::string, std::string> expected = {
      {"dserve:num_requests_running", "gauge"},
      {"dserve:num_requests_waiting", "gauge"},
      {"dserve:kv_cache_usage_perc", "gauge"},
      {"dserve:kv_cache_used_pages", "gauge"},
      {"dserve:kv_cache_total_pages", "gauge"},
      {"dserve:num_preemptions_total", "counter"},
      {"dserve:spec_decode_num_drafts_total", "counter"},
      {"dserve:spec_decode_num_draft_tokens_total", "counter"},
      {"dserve:spec_decode_num_accepted_tokens_total", "counter"},
      {"dserve:prompt_tokens_total", "counter"},
      {"dserve:generation_tokens_total", "counter"},
      {"dserve:prefix_cache_queries_total", "counter"},
      {"dserve:prefix_cache_hits_total", "counter"},
      {"dserve:prefix_cache_hit_rate", "gauge"},
      {"dserve:request_success_total", "counter"},
      {"dserve:request_rejected_total", "counter"},
      {"dserve:time_to_first_token_seconds", "histogram"},
      {"dserve:inter_token_latency_seconds", "histogram"},
      {"dserve:e2e_request_latency_seconds", "histogram"},
      {"dserve:request_queue_time_seconds", "histogram"},
      {"dserve:request_prompt_tokens", "histogram"},
      {"dserve:request_generation_tokens", "histogram"},
      {"dserve:moe_expert_tokens_total", "counter"},
      {"dserve:moe_expert_load_imbalance", "gauge"},
  };
  EXPECT_EQ(exp.type, expected);
  for (const auto& [name, type] : exp.type) {
    EXPECT_FALSE(exp.help.at(name).empty()) << name;
    if (type == "counter") {
      EXPECT_TRUE(name.ends_with("_total")) << name;
    }
  }
  EXPECT_EQ(exp.help.size(), exp.type.size());
}

TEST(ServerMetricsTest, HistogramBucketsAreCumulativeWithInfEqualToCount) {
  ServerMetrics metrics;
  for (double s : {0.0005, 0.003, 0.003, 0.07, 0.9, 3.0, 5000.0}) {
    metrics.ObserveTimeToFirstToken(s);
    metrics.ObserveInterTokenLatency(s);
    metrics.ObserveE2eLatency(s);
    metrics.ObserveQueueTime(s);
  }
  metrics.ObserveRequestTokens(7, 300000);
  const Exposition exp = Parse(metrics.Render());
  for (const std::string& name : kHistograms) CheckHistogram(exp, name);
  EXPECT_EQ(exp.Value("dserve:time_to_first_token_seconds_count"), 7);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "0.001"), 1);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "0.005"), 3);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "0.08"), 4);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "2560"), 6);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "+Inf"), 7);
  // 300000 generated tokens is past the last bound: only +Inf has it.
  EXPECT_EQ(Bucket(exp, "dserve:request_generation_tokens", "200000"), 0);
  EXPECT_EQ(Bucket(exp, "dserve:request_generation_tokens", "+Inf"), 1);
  EXPECT_EQ(Bucket(exp, "dserve:request_prompt_tokens", "5"), 0);
  EXPECT_EQ(Bucket(exp, "dserve:request_prompt_tokens", "10"), 1);
}

TEST(ServerMetricsTest, BucketUpperBoundsAreInclusive) {
  ServerMetrics metrics;
  metrics.ObserveE2eLatency(0.5);
  metrics.ObserveE2eLatency(1.0);
  const Exposition exp = Parse(metrics.Render());
  EXPECT_EQ(Bucket(exp, "dserve:e2e_request_latency_seconds", "0.3"), 0);
  EXPECT_EQ(Bucket(exp, "dserve:e2e_request_latency_seconds", "0.5"), 1);
  EXPECT_EQ(Bucket(exp, "dserve:e2e_request_latency_seconds", "0.8"), 1);
  EXPECT_EQ(Bucket(exp, "dserve:e2e_request_latency_seconds", "1"), 2);
}

TEST(ServerMetricsTest, SumMatchesObservations) {
  ServerMetrics metrics;
  const std::vector<double> observed = {0.0125, 0.25, 1.75, 42.0, 0.001};
  double expected = 0;
  for (double s : observed) {
    metrics.ObserveInterTokenLatency(s);
    expected += s;
  }
  metrics.ObserveInterTokenLatency(std::nan(""));  // dropped
  metrics.ObserveRequestTokens(100, 20);
  metrics.ObserveRequestTokens(28, 1);
  const Exposition exp = Parse(metrics.Render());
  EXPECT_DOUBLE_EQ(exp.Value("dserve:inter_token_latency_seconds_sum"), expected);
  EXPECT_EQ(exp.Value("dserve:inter_token_latency_seconds_count"), 5);
  EXPECT_EQ(exp.Value("dserve:request_prompt_tokens_sum"), 128);
  EXPECT_EQ(exp.Value("dserve:request_generation_tokens_sum"), 21);
  EXPECT_EQ(exp.Value("dserve:request_generation_tokens_count"), 2);
  EXPECT_EQ(exp.Value("dserve:e2e_request_latency_seconds_sum"), 0);
}

TEST(ServerMetricsTest, BucketBoundariesAreVllmsAndPrintWithoutExponent) {
  const Exposition exp = Parse(ServerMetrics().Render());
  EXPECT_EQ(CheckHistogram(exp, "dserve:time_to_first_token_seconds"), TimeToFirstTokenBuckets());
  EXPECT_EQ(CheckHistogram(exp, "dserve:inter_token_latency_seconds"), InterTokenLatencyBuckets());
  EXPECT_EQ(CheckHistogram(exp, "dserve:e2e_request_latency_seconds"), RequestLatencyBuckets());
  EXPECT_EQ(CheckHistogram(exp, "dserve:request_queue_time_seconds"), RequestLatencyBuckets());
  EXPECT_EQ(CheckHistogram(exp, "dserve:request_prompt_tokens"), RequestTokenBuckets());
  EXPECT_EQ(CheckHistogram(exp, "dserve:request_generation_tokens"), RequestTokenBuckets());

  const std::vector<double> itl = InterTokenLatencyBuckets();
  ASSERT_EQ(itl.size(), 22u);
  EXPECT_EQ(std::vector<double>(itl.begin(), itl.begin() + 4),
            (std::vector<double>{0.001, 0.0025, 0.005, 0.01}));
  EXPECT_EQ(itl.back(), 80);
  EXPECT_EQ(TimeToFirstTokenBuckets().size(), 22u);
  EXPECT_EQ(RequestLatencyBuckets().size(), 21u);
  EXPECT_EQ(RequestLatencyBuckets().back(), 7680);
  EXPECT_EQ(RequestTokenBuckets().size(), 17u);

  // Integral bounds print as integers ("100000", not "1e+05"), fractions in shortest form.
  std::vector<std::string> les;
  for (const Sample* s : exp.All("dserve:request_prompt_tokens_bucket")) {
    les.push_back(s->labels.at("le"));
  }
  EXPECT_EQ(les, (std::vector<std::string>{"1", "2", "5", "10", "20", "50", "100", "200", "500",
                                           "1000", "2000", "5000", "10000", "20000", "50000",
                                           "100000", "200000", "+Inf"}));
  EXPECT_NE(exp.Find("dserve:inter_token_latency_seconds_bucket", {{"le", "0.0025"}}), nullptr);
}

TEST(ServerMetricsTest, TokenCountersIncrease) {
  ServerMetrics metrics;
  metrics.AddPromptTokens(100);
  metrics.AddCachedPromptTokens(64);
  metrics.AddGenerationTokens(5);
  Exposition exp = Parse(metrics.Render());
  EXPECT_EQ(exp.Value("dserve:prompt_tokens_total"), 100);
  EXPECT_EQ(exp.Value("dserve:prefix_cache_queries_total"), 100);
  EXPECT_EQ(exp.Value("dserve:prefix_cache_hits_total"), 64);
  EXPECT_EQ(exp.Value("dserve:generation_tokens_total"), 5);
  EXPECT_DOUBLE_EQ(exp.Value("dserve:prefix_cache_hit_rate"), 0.64);

  metrics.AddPromptTokens(60);
  metrics.AddGenerationTokens(1);
  metrics.AddGenerationTokens(1);
  metrics.AddGenerationTokens(-7);  // ignored: counters never go down
  metrics.AddPromptTokens(0);
  exp = Parse(metrics.Render());
  EXPECT_EQ(exp.Value("dserve:prompt_tokens_total"), 160);
  EXPECT_EQ(exp.Value("dserve:prefix_cache_queries_total"), 160);
  EXPECT_EQ(exp.Value("dserve:prefix_cache_hits_total"), 64);
  EXPECT_EQ(exp.Value("dserve:generation_tokens_total"), 7);
  EXPECT_DOUBLE_EQ(exp.Value("dserve:prefix_cache_hit_rate"), 0.4);
  // Counters print as plain integers.
  EXPECT_EQ(exp.Find("dserve:prompt_tokens_total")->raw_value, "160");
}

TEST(ServerMetricsTest, HitRateIsZeroWithoutQueries) {
  const Exposition exp = Parse(ServerMetrics().Render());
  EXPECT_EQ(exp.Value("dserve:prefix_cache_hit_rate"), 0);
  EXPECT_EQ(exp.Find("dserve:prefix_cache_hit_rate")->raw_value, "0");
}

TEST(ServerMetricsTest, FinishReasonsStartAtZeroAndCount) {
  ServerMetrics metrics;
  Exposition exp = Parse(metrics.Render());
  for (const char* reason : {"stop", "length", "abort", "error", "tool_calls"}) {
    EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", reason}}), 0)
        << reason;
  }
  metrics.RequestFinished("stop");
  metrics.RequestFinished("stop");
  metrics.RequestFinished("length");
  metrics.RequestFinished("tool_calls");
  metrics.RequestFinished("content_filter");  // not preset: gets its own series
  exp = Parse(metrics.Render());
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "stop"}}), 2);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "length"}}), 1);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "abort"}}), 0);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "tool_calls"}}), 1);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "content_filter"}}), 1);
  EXPECT_EQ(exp.All("dserve:request_success_total").size(), 6u);
}

TEST(ServerMetricsTest, RejectionsAreCreatedOnFirstUse) {
  ServerMetrics metrics;
  Exposition exp = Parse(metrics.Render());
  EXPECT_EQ(exp.type.at("dserve:request_rejected_total"), "counter");
  EXPECT_TRUE(exp.All("dserve:request_rejected_total").empty());
  metrics.RequestRejected(429);
  metrics.RequestRejected(400);
  metrics.RequestRejected(429);
  exp = Parse(metrics.Render());
  EXPECT_EQ(exp.Value("dserve:request_rejected_total", {{"code", "429"}}), 2);
  EXPECT_EQ(exp.Value("dserve:request_rejected_total", {{"code", "400"}}), 1);
  EXPECT_EQ(exp.All("dserve:request_rejected_total").size(), 2u);
}

TEST(ServerMetricsTest, LabelValuesAreEscaped) {
  ServerMetrics metrics;
  const std::string nasty = "a\"b\\c\nd";
  metrics.RequestFinished(nasty);
  const std::string text = metrics.Render();
  EXPECT_NE(text.find(R"(dserve:request_success_total{finished_reason="a\"b\\c\nd"} 1)"),
            std::string::npos)
      << text;
  const Exposition exp = Parse(text);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", nasty}}), 1);

  ServerMetrics named(ServerMetricsOptions{.model_name = "org/m\"x\""});
  const Exposition named_exp = Parse(named.Render());
  EXPECT_EQ(named_exp.Value("dserve:prompt_tokens_total", {{"model_name", "org/m\"x\""}}), 0);
}

TEST(ServerMetricsTest, ModelNameLabelsEverySample) {
  ServerMetrics metrics(ServerMetricsOptions{.model_name = "deepseek-v3"});
  metrics.RequestRejected(503);
  metrics.SetEngineStateSource([] {
    EngineState state;
    state.expert_tokens = {{1, 2}};
    return state;
  });
  const Exposition exp = Parse(metrics.Render());
  ASSERT_FALSE(exp.samples.empty());
  for (const Sample& s : exp.samples) {
    EXPECT_EQ(s.labels.count("model_name"), 1u) << s.name;
    if (s.labels.count("model_name")) {
      EXPECT_EQ(s.labels.at("model_name"), "deepseek-v3");
    }
  }
  EXPECT_EQ(
      exp.Value("dserve:request_rejected_total", {{"model_name", "deepseek-v3"}, {"code", "503"}}),
      1);
}

TEST(ServerMetricsTest, EngineStateComesFromTheCallbackAtScrapeTime) {
  ServerMetrics metrics;
  Exposition exp = Parse(metrics.Render());  // no source yet: zeros, no expert series
  EXPECT_EQ(exp.Value("dserve:num_requests_running"), 0);
  EXPECT_EQ(exp.Value("dserve:kv_cache_usage_perc"), 0);
  EXPECT_TRUE(exp.All("dserve:moe_expert_tokens_total").empty());
  EXPECT_TRUE(exp.All("dserve:moe_expert_load_imbalance").empty());

  int calls = 0;
  metrics.SetEngineStateSource([&calls] {
    ++calls;
    EngineState state;
    state.num_running = 3 + calls;
    state.num_waiting = 7;
    state.kv_pages_used = 256;
    state.kv_pages_total = 1024;
    state.num_preemptions = 2;
    state.verifications = 20;
    state.draft_tokens = 40;
    state.accepted_draft_tokens = 31;
    state.accepted_at = {18, 13};
    return state;
  });
  exp = Parse(metrics.Render());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(exp.Value("dserve:num_requests_running"), 4);
  EXPECT_EQ(exp.Value("dserve:num_requests_waiting"), 7);
  EXPECT_EQ(exp.Value("dserve:kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(exp.Value("dserve:kv_cache_used_pages"), 256);
  EXPECT_EQ(exp.Value("dserve:kv_cache_total_pages"), 1024);
  EXPECT_EQ(exp.Value("dserve:num_preemptions_total"), 2);
  EXPECT_EQ(exp.Value("dserve:spec_decode_num_draft_tokens_total"), 40);
  EXPECT_EQ(exp.Value("dserve:spec_decode_num_accepted_tokens_total"), 31);
  EXPECT_EQ(exp.Value("dserve:spec_decode_num_drafts_total"), 20);
  EXPECT_EQ(
      exp.Value("dserve:spec_decode_num_accepted_tokens_per_pos_total", {{"position", "0"}}), 18);
  EXPECT_EQ(
      exp.Value("dserve:spec_decode_num_accepted_tokens_per_pos_total", {{"position", "1"}}), 13);
  exp = Parse(metrics.Render());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(exp.Value("dserve:num_requests_running"), 5);
}

TEST(ServerMetricsTest, NonIntegralGaugesRoundTrip) {
  ServerMetrics metrics;
  metrics.SetEngineStateSource([] {
    EngineState state;
    state.kv_pages_used = 1;
    state.kv_pages_total = 3;
    return state;
  });
  const Exposition exp = Parse(metrics.Render());
  EXPECT_EQ(exp.Value("dserve:kv_cache_usage_perc"), 1.0 / 3.0);  // exact, not approximately
}

// Expert parallelism: each rank's slice of every layer's experts, summed, labelled by rank;
// none without EP.
TEST(ServerMetricsTest, ExpertParallelRanksGetTheirSlicesLoad) {
  ServerMetrics metrics;
  metrics.SetEngineStateSource([] {
    EngineState state;
    state.expert_tokens = {{1, 2, 3, 4, 5, 6, 7, 8}, {0, 0, 0, 0, 0, 0, 0, 9}};
    state.expert_layers = {1, 2};
    state.ep_size = 4;
    return state;
  });
  Exposition exp = Parse(metrics.Render());
  EXPECT_EQ(exp.All("dserve:moe_rank_tokens_total").size(), 8u);
  EXPECT_EQ(exp.Value("dserve:moe_rank_tokens_total", {{"layer", "1"}, {"rank", "0"}}), 3);
  EXPECT_EQ(exp.Value("dserve:moe_rank_tokens_total", {{"layer", "1"}, {"rank", "3"}}), 15);
  EXPECT_EQ(exp.Value("dserve:moe_rank_tokens_total", {{"layer", "2"}, {"rank", "3"}}), 9);
  EXPECT_EQ(exp.Value("dserve:moe_rank_tokens_total", {{"layer", "2"}, {"rank", "1"}}), 0);
  metrics.SetEngineStateSource([] {
    EngineState state;
    state.expert_tokens = {{1, 2}};
    return state;
  });
  exp = Parse(metrics.Render());
  EXPECT_TRUE(exp.All("dserve:moe_rank_tokens_total").empty());
}

TEST(ServerMetricsTest, ExpertTokensCarryLayerAndExpertLabels) {
  ServerMetrics metrics;
  metrics.SetEngineStateSource([] {
    EngineState state;
    state.expert_tokens = {std::vector<int64_t>(18, 0), {4, 0, 0, 0}};
    state.expert_tokens[0][17] = 123456789012;
    state.expert_layers = {3, 4};
    return state;
  });
  const Exposition exp = Parse(metrics.Render());
  EXPECT_EQ(exp.All("dserve:moe_expert_tokens_total").size(), 22u);
  EXPECT_EQ(exp.Value("dserve:moe_expert_tokens_total", {{"layer", "3"}, {"expert", "17"}}),
            123456789012.0);
  EXPECT_EQ(
      exp.Find("dserve:moe_expert_tokens_total", {{"layer", "3"}, {"expert", "17"}})->raw_value,
      "123456789012");
  EXPECT_EQ(exp.Value("dserve:moe_expert_tokens_total", {{"layer", "4"}, {"expert", "0"}}), 4);
  EXPECT_EQ(exp.Value("dserve:moe_expert_load_imbalance", {{"layer", "3"}}), 18);
  EXPECT_EQ(exp.Value("dserve:moe_expert_load_imbalance", {{"layer", "4"}}), 4);

  // Without layer numbers the MoE layer index stands in.
  metrics.SetEngineStateSource([] {
    EngineState state;
    state.expert_tokens = {{1, 1}, {0, 0}};
    return state;
  });
  const Exposition indexed = Parse(metrics.Render());
  EXPECT_EQ(indexed.Value("dserve:moe_expert_load_imbalance", {{"layer", "0"}}), 1);
  EXPECT_EQ(indexed.Value("dserve:moe_expert_load_imbalance", {{"layer", "1"}}), 0);
}

TEST(ExpertLoadImbalanceTest, MaxOverMean) {
  EXPECT_DOUBLE_EQ(ExpertLoadImbalance({4, 0, 0, 0}), 4.0);
  EXPECT_DOUBLE_EQ(ExpertLoadImbalance({1, 1, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(ExpertLoadImbalance({3, 1}), 1.5);
  EXPECT_DOUBLE_EQ(ExpertLoadImbalance({0, 0, 0}), 0.0);
  EXPECT_DOUBLE_EQ(ExpertLoadImbalance({}), 0.0);
}

TEST(InstrumentsTest, HistogramGaugeAndCounterFamilyDirectly) {
  Histogram histogram({1, 2});
  histogram.Observe(1);
  histogram.Observe(1.5);
  histogram.Observe(99);
  histogram.Observe(-1);
  histogram.Observe(std::nan(""));
  const Histogram::Snapshot snapshot = histogram.Collect();
  EXPECT_EQ(snapshot.cumulative, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(snapshot.count, 4u);
  EXPECT_DOUBLE_EQ(snapshot.sum, 100.5);

  Gauge gauge;
  gauge.Set(2.5);
  gauge.Add(-1);
  EXPECT_EQ(gauge.Value(), 1.5);

  CounterFamily family("code", {"200"});
  Counter& ok = family.WithLabel("200");
  Counter& teapot = family.WithLabel("418");
  EXPECT_EQ(&ok, &family.WithLabel("200"));
  EXPECT_EQ(&teapot, &family.WithLabel("418"));
  teapot.Add(3);
  EXPECT_EQ(family.Collect(),
            (std::vector<std::pair<std::string, int64_t>>{{"200", 0}, {"418", 3}}));
}

TEST(ServerMetricsTest, ConcurrentObservationsAreExact) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 10000;
  ServerMetrics metrics;
  metrics.SetEngineStateSource([] { return EngineState{}; });
  std::atomic<bool> done{false};
  int scrapes = 0;
  // A scraper running alongside must always see a self-consistent exposition.
  std::thread scraper([&] {
    do {
      const Exposition exp = Parse(metrics.Render());
      for (const std::string& name : kHistograms) CheckHistogram(exp, name);
      ++scrapes;
      if (::testing::Test::HasFailure()) return;
    } while (!done.load());
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&metrics, t] {
      for (int i = 0; i < kPerThread; ++i) {
        metrics.ObserveInterTokenLatency(0.5);  // exact in binary, so the sum is exact too
        metrics.ObserveTimeToFirstToken(t % 2 == 0 ? 0.002 : 3.0);
        metrics.AddGenerationTokens(1);
        metrics.AddPromptTokens(2);
        metrics.RequestFinished(i % 2 == 0 ? "stop" : "length");
        metrics.RequestRejected(i % 3 == 0 ? 429 : 400 + t);  // creation races with lookups
      }
    });
  }
  for (std::thread& w : workers) w.join();
  done.store(true);
  scraper.join();
  EXPECT_GE(scrapes, 1);

  const Exposition exp = Parse(metrics.Render());
  constexpr double kTotal = kThreads * kPerThread;
  EXPECT_EQ(exp.Value("dserve:inter_token_latency_seconds_count"), kTotal);
  EXPECT_EQ(exp.Value("dserve:inter_token_latency_seconds_sum"), kTotal * 0.5);
  EXPECT_EQ(Bucket(exp, "dserve:inter_token_latency_seconds", "0.4"), 0);
  EXPECT_EQ(Bucket(exp, "dserve:inter_token_latency_seconds", "0.5"), kTotal);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "0.005"), kTotal / 2);
  EXPECT_EQ(Bucket(exp, "dserve:time_to_first_token_seconds", "+Inf"), kTotal);
  EXPECT_EQ(exp.Value("dserve:generation_tokens_total"), kTotal);
  EXPECT_EQ(exp.Value("dserve:prompt_tokens_total"), 2 * kTotal);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "stop"}}), kTotal / 2);
  EXPECT_EQ(exp.Value("dserve:request_success_total", {{"finished_reason", "length"}}), kTotal / 2);
  double rejected = 0;
  int per_code_429 = 0;
  for (const Sample* s : exp.All("dserve:request_rejected_total")) {
    rejected += s->value;
    if (s->labels.at("code") == "429") per_code_429 = static_cast<int>(s->value);
  }
  EXPECT_EQ(rejected, kTotal);
  EXPECT_EQ(per_code_429, kThreads * ((kPerThread + 2) / 3));
  EXPECT_EQ(exp.All("dserve:request_rejected_total").size(), 1u + kThreads);
}

}  // namespace
}  // namespace dserve::server
