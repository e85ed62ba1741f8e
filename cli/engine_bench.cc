#include "cli/engine_bench.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/engine_flags.h"
#include "core/progress.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"

namespace dserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0;
};

// Nearest-rank percentiles of v (milliseconds).
Percentiles Summarise(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
    return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  return p;
}

struct Timeline {
  Clock::time_point submitted;
  std::vector<Clock::time_point> tokens;  // when each generated token arrived
  int64_t prompt_tokens = 0, cached_tokens = 0;
  bool done = false;
};

}  // namespace

std::vector<FlagSpec> EngineBenchFlags() {
  std::vector<FlagSpec> specs = EngineFlags();
  specs.push_back({"num-prompts", "engine benchmark: requests to run", ""});
  specs.push_back({"input-len", "engine benchmark: prompt tokens per request", "128"});
  specs.push_back({"output-len", "engine benchmark: generated tokens per request", "128"});
  specs.push_back({"concurrency", "engine benchmark: requests in flight at once", "16"});
  specs.push_back({"prefix-share", "engine benchmark: fraction of each prompt shared by all", "0"});
  specs.push_back({"json", "engine benchmark: print the figures as one JSON object", "", true});
  return specs;
}

absl::Status RunEngineBench(const Flags& flags, ModelSession& session) {
  DSERVE_ASSIGN_OR_RETURN(engine::EngineConfig config, ParseEngineConfig(flags, session));
  DSERVE_ASSIGN_OR_RETURN(int64_t num_prompts, flags.GetInt("num-prompts", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(int64_t input_len, flags.GetInt("input-len", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(int64_t output_len, flags.GetInt("output-len", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(int64_t concurrency, flags.GetInt("concurrency", 1, 1 << 16));
  double share = 0;
  if (!absl::SimpleAtod(flags.Get("prefix-share"), &share) || share < 0 || share > 1) {
    return absl::InvalidArgumentError(absl::StrCat("--prefix-share must be in [0, 1], got '",
                                                   flags.Get("prefix-share"), "'"));
  }
  const bool json = flags.GetBool("json");
  const models::ModelConfig& mc = session.model->config();

  // Prompts: random ids past the special tokens; the first share * input_len are the same
  // in every prompt (a shared system prompt), the rest differ.
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> id(100, static_cast<int32_t>(mc.vocab_size - 1));
  const int64_t shared = static_cast<int64_t>(share * input_len + 0.5);
  std::vector<int32_t> common(shared);
  for (int32_t& t : common) t = id(rng);
  std::vector<engine::Request> requests(num_prompts);
  for (engine::Request& r : requests) {
    r.prompt = common;
    while (static_cast<int64_t>(r.prompt.size()) < input_len) r.prompt.push_back(id(rng));
    r.params.temperature = 0.0f;
    r.params.max_tokens = static_cast<int>(output_len);
    r.params.ignore_eos = true;
    r.detokenize = false;
  }

  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::EngineCore> core,
                          engine::EngineCore::Create(*session.model, nullptr, config));
  const int64_t num_pages = core->num_pages(), page_size = core->page_size();
  engine::Engine eng(std::move(core));
  {
    // Warm-up (first touches of the cache and weights), not timed; it leaves its prompt in
    // the prefix cache, which shares nothing with the benchmark's.
    engine::OutputQueue q;
    engine::Request warm = requests[0];
    for (int32_t& t : warm.prompt) t = 3 + (t % 90);
    warm.params.max_tokens = 4;
    DSERVE_RETURN_IF_ERROR(
        eng.Submit(warm, [&q](const engine::RequestOutput& o) { q.Push(o); }).status());
    while (q.Next()) {
    }
  }
  const engine::EngineStats before = eng.stats();

  std::vector<Timeline> timelines(num_prompts);
  std::mutex mu;
  std::condition_variable all_done;
  int64_t next = 0, finished = 0;
  absl::Status failure;
  Progress progress("engine benchmark", num_prompts, "requests", /*enabled=*/!json);
  // Submits request `next` (caller holds mu). Called from this thread at the start and from
  // the engine thread each time a request finishes, keeping `concurrency` in flight.
  std::function<void()> submit_next = [&] {
    const int64_t i = next++;
    timelines[i].submitted = Clock::now();
    timelines[i].prompt_tokens = static_cast<int64_t>(requests[i].prompt.size());
    auto id = eng.Submit(requests[i], [&, i](const engine::RequestOutput& o) {
      const auto now = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      for (size_t k = 0; k < o.tokens.size(); ++k) timelines[i].tokens.push_back(now);
      if (o.finish == engine::FinishReason::kError) failure = absl::InternalError(o.error);
      if (!o.request_finished) return;
      timelines[i].cached_tokens = o.usage.cached_prompt_tokens;
      timelines[i].done = true;
      ++finished;
      progress.Advance(1);
      if (next < num_prompts) submit_next();
      if (finished == num_prompts) all_done.notify_all();
    });
    if (!id.ok()) failure = id.status();
  };
  const auto start = Clock::now();
  {
    std::unique_lock<std::mutex> lock(mu);
    while (next < std::min(concurrency, num_prompts)) submit_next();
    all_done.wait(lock, [&] { return finished == num_prompts || !failure.ok(); });
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  progress.Finish();
  DSERVE_RETURN_IF_ERROR(failure);

  engine::EngineStats stats = eng.stats();
  stats.steps -= before.steps;
  stats.tokens -= before.tokens;
  stats.schedule_seconds -= before.schedule_seconds;
  stats.forward_seconds -= before.forward_seconds;
  stats.sample_seconds -= before.sample_seconds;
  stats.step_seconds -= before.step_seconds;
  int64_t prompt_tokens = 0, generated = 0, cached = 0;
  std::vector<double> ttft, itl;
  for (const Timeline& t : timelines) {
    prompt_tokens += t.prompt_tokens;
    cached += t.cached_tokens;
    generated += static_cast<int64_t>(t.tokens.size());
    if (t.tokens.empty()) continue;
    ttft.push_back(std::chrono::duration<double, std::milli>(t.tokens[0] - t.submitted).count());
    for (size_t k = 1; k < t.tokens.size(); ++k) {
      itl.push_back(std::chrono::duration<double, std::milli>(t.tokens[k] - t.tokens[k - 1]).count());
    }
  }
  const Percentiles ttft_p = Summarise(ttft), itl_p = Summarise(itl);
  const double prompt_tps = prompt_tokens / wall, gen_tps = generated / wall;
  const double hit_rate = prompt_tokens ? static_cast<double>(cached) / prompt_tokens : 0.0;
  const double sched_share = stats.step_seconds > 0 ? stats.schedule_seconds / stats.step_seconds : 0;
  const double sample_share = stats.step_seconds > 0 ? stats.sample_seconds / stats.step_seconds : 0;
  const int64_t preemptions = eng.total_preemptions();

  if (json) {
    nlohmann::ordered_json j = {
        {"num_prompts", num_prompts},
        {"input_len", input_len},
        {"output_len", output_len},
        {"concurrency", concurrency},
        {"prefix_share", share},
        {"threads", session.ops->num_threads()},
        {"wall_s", wall},
        {"prompt_tokens_per_s", prompt_tps},
        {"generated_tokens_per_s", gen_tps},
        {"ttft_ms", {{"p50", ttft_p.p50}, {"p90", ttft_p.p90}, {"p99", ttft_p.p99}}},
        {"itl_ms", {{"p50", itl_p.p50}, {"p90", itl_p.p90}, {"p99", itl_p.p99}}},
        {"peak_kv_pages", stats.peak_used_pages},
        {"kv_pages", num_pages},
        {"page_size", page_size},
        {"prefix_cache_hit_rate", hit_rate},
        {"steps", stats.steps},
        {"scheduler_share", sched_share},
        {"sampler_share", sample_share},
        {"preemptions", preemptions},
    };
    std::printf("%s\n", j.dump().c_str());
    return absl::OkStatus();
  }
  std::printf("requests         %lld (prompt %lld tokens, %lld shared; output %lld), concurrency %lld, %d threads\n",
              static_cast<long long>(num_prompts), static_cast<long long>(input_len),
              static_cast<long long>(shared), static_cast<long long>(output_len),
              static_cast<long long>(concurrency), session.ops->num_threads());
  std::printf("wall             %.2f s\n", wall);
  std::printf("throughput       prompt %.0f tokens/s, generated %.1f tokens/s\n", prompt_tps, gen_tps);
  std::printf("TTFT             p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n", ttft_p.p50, ttft_p.p90, ttft_p.p99);
  std::printf("ITL              p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", itl_p.p50, itl_p.p90, itl_p.p99);
  std::printf("KV cache         peak %lld of %lld pages (%lld tokens each), prefix-cache hit rate %.1f%%\n",
              static_cast<long long>(stats.peak_used_pages), static_cast<long long>(num_pages),
              static_cast<long long>(page_size), 100.0 * hit_rate);
  std::printf("steps            %lld, %.1f tokens per step, %lld preemptions\n",
              static_cast<long long>(stats.steps),
              stats.steps ? static_cast<double>(stats.tokens) / stats.steps : 0.0,
              static_cast<long long>(preemptions));
  std::printf("step time        scheduler %.2f%%, forward %.1f%%, sampling %.1f%%\n",
              100.0 * sched_share, 100.0 * stats.forward_seconds / std::max(1e-12, stats.step_seconds),
              100.0 * sample_share);
  return absl::OkStatus();
}

}  // namespace dserve::cli
