#include "cli/engine_bench.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/bench_prompts.h"
#include "cli/engine_flags.h"
#include "cli/percentiles.h"
#include "core/progress.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"

namespace dserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Timeline {
  Clock::time_point submitted;
  // When each delivery of tokens arrived (an engine step's accepted drafts come together), and
  // how many tokens it carried.
  std::vector<Clock::time_point> deliveries;
  int64_t tokens = 0;
  int64_t prompt_tokens = 0, cached_tokens = 0;
};

// One benchmark configuration and what a run of it measured.
struct Setting {
  int64_t concurrency = 16;
  double share = 0;
  int speculative = 0;  // MTP drafts per step (0: off)
};

struct Figures {
  double wall = 0, prompt_tps = 0, gen_tps = 0, hit_rate = 0;
  Percentiles ttft, itl;
  int64_t peak_pages = 0, steps = 0, tokens = 0, preemptions = 0;
  double sched_share = 0, sample_share = 0, forward_share = 0;
  // Speculative decoding: verifications, drafts checked / accepted (also by position).
  int64_t verifications = 0, drafts = 0, accepted_drafts = 0;
  std::array<double, engine::kMaxSpeculativeTokens> drafts_at{}, accepted_at{};
  double mtp_share = 0, verify_share = 0;
  int64_t generated = 0;
};

struct Workload {
  int64_t num_prompts, input_len, output_len;
  std::vector<std::vector<int32_t>> file_prompts;  // --prompts-file (empty: random prompts)
};

// Runs the workload once in a fresh engine (empty prefix cache).
absl::StatusOr<Figures> RunOnce(ModelSession& session, const engine::EngineConfig& base_config,
                                const Workload& w, const Setting& setting, bool show_progress,
                                int64_t* num_pages, int64_t* page_size) {
  const models::ModelConfig& mc = session.model->config();
  const std::vector<std::vector<int32_t>> prompts =
      w.file_prompts.empty()
          ? RandomPrompts(w.num_prompts, w.input_len, setting.share, mc.vocab_size)
          : w.file_prompts;
  std::vector<engine::Request> requests(w.num_prompts);
  for (size_t i = 0; i < requests.size(); ++i) {
    engine::Request& r = requests[i];
    r.prompt = prompts[i % prompts.size()];
    r.params.temperature = 0.0f;
    r.params.max_tokens = static_cast<int>(w.output_len);
    r.params.ignore_eos = true;
    r.detokenize = false;
  }
  engine::EngineConfig config = base_config;
  config.num_speculative_tokens = setting.speculative;

  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::EngineCore> core,
                          engine::EngineCore::Create(*session.model, nullptr, config));
  *num_pages = core->num_pages();
  *page_size = core->page_size();
  engine::Engine eng(std::move(core));
  {
    // Warm-up, not timed; its prompt shares nothing with the benchmark's.
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

  std::vector<Timeline> timelines(w.num_prompts);
  std::mutex mu;
  std::condition_variable all_done;
  int64_t next = 0, finished = 0;
  absl::Status failure;
  Progress progress("engine benchmark", w.num_prompts, "requests", show_progress);
  // Submits request `next` (caller holds mu): from this thread at the start, then from the
  // engine thread whenever a request finishes, keeping `concurrency` in flight.
  std::function<void()> submit_next = [&] {
    const int64_t i = next++;
    timelines[i].submitted = Clock::now();
    timelines[i].prompt_tokens = static_cast<int64_t>(requests[i].prompt.size());
    auto submitted = eng.Submit(requests[i], [&, i](const engine::RequestOutput& o) {
      const auto now = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      if (!o.tokens.empty()) {
        timelines[i].deliveries.push_back(now);
        timelines[i].tokens += static_cast<int64_t>(o.tokens.size());
      }
      if (o.finish == engine::FinishReason::kError) failure = absl::InternalError(o.error);
      if (!o.request_finished) return;
      timelines[i].cached_tokens = o.usage.cached_prompt_tokens;
      ++finished;
      progress.Advance(1);
      if (next < w.num_prompts) submit_next();
      if (finished == w.num_prompts) all_done.notify_all();
    });
    if (!submitted.ok()) failure = submitted.status();
  };
  const auto start = Clock::now();
  {
    std::unique_lock<std::mutex> lock(mu);
    while (next < std::min(setting.concurrency, w.num_prompts)) submit_next();
    all_done.wait(lock, [&] { return finished == w.num_prompts || !failure.ok(); });
  }
  Figures f;
  f.wall = std::chrono::duration<double>(Clock::now() - start).count();
  progress.Finish();
  DSERVE_RETURN_IF_ERROR(failure);

  const engine::EngineStats after = eng.stats();
  const double step_s = after.step_seconds - before.step_seconds;
  f.steps = after.steps - before.steps;
  f.tokens = after.tokens - before.tokens;
  f.sched_share = step_s > 0 ? (after.schedule_seconds - before.schedule_seconds) / step_s : 0;
  f.sample_share = step_s > 0 ? (after.sample_seconds - before.sample_seconds) / step_s : 0;
  f.forward_share = step_s > 0 ? (after.forward_seconds - before.forward_seconds) / step_s : 0;
  f.mtp_share = step_s > 0 ? (after.mtp_seconds - before.mtp_seconds) / step_s : 0;
  f.verify_share =
      step_s > 0 ? (after.verify_forward_seconds - before.verify_forward_seconds) / step_s : 0;
  f.verifications = after.verifications - before.verifications;
  f.drafts = after.draft_tokens - before.draft_tokens;
  f.accepted_drafts = after.accepted_draft_tokens - before.accepted_draft_tokens;
  for (int j = 0; j < engine::kMaxSpeculativeTokens; ++j) {
    f.drafts_at[j] = static_cast<double>(after.drafts_at[j] - before.drafts_at[j]);
    f.accepted_at[j] = static_cast<double>(after.accepted_at[j] - before.accepted_at[j]);
  }
  f.peak_pages = after.peak_used_pages;
  f.preemptions = eng.total_preemptions();
  int64_t prompt_tokens = 0, generated = 0, cached = 0;
  std::vector<double> ttft, itl;
  for (const Timeline& t : timelines) {
    prompt_tokens += t.prompt_tokens;
    cached += t.cached_tokens;
    generated += t.tokens;
    if (t.deliveries.empty()) continue;
    const auto& d = t.deliveries;
    ttft.push_back(std::chrono::duration<double, std::milli>(d[0] - t.submitted).count());
    // Per delivery, as vLLM's benchmark counts it: with drafts a step delivers several tokens.
    for (size_t k = 1; k < d.size(); ++k) {
      itl.push_back(std::chrono::duration<double, std::milli>(d[k] - d[k - 1]).count());
    }
  }
  f.ttft = Summarise(ttft);
  f.itl = Summarise(itl);
  f.prompt_tps = prompt_tokens / f.wall;
  f.gen_tps = generated / f.wall;
  f.generated = generated;
  f.hit_rate = prompt_tokens ? static_cast<double>(cached) / prompt_tokens : 0.0;
  return f;
}

// "1,16" -> {1, 16}.
template <typename T>
absl::StatusOr<std::vector<T>> ParseList(const std::string& flag, const std::string& text,
                                         T min, T max) {
  std::vector<T> out;
  for (const std::string& item : std::vector<std::string>(absl::StrSplit(text, ','))) {
    double v;
    if (!absl::SimpleAtod(item, &v) || v < min || v > max ||
        (std::is_integral_v<T> && v != static_cast<double>(static_cast<int64_t>(v)))) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", item, "' must be ",
                                                     std::is_integral_v<T> ? "an integer " : "",
                                                     "in [", min, ", ", max, "]"));
    }
    out.push_back(static_cast<T>(v));
  }
  return out;
}

double MedianOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The per-figure median over runs (each figure separately).
Figures Medians(const std::vector<Figures>& runs) {
  auto med = [&](auto field) {
    std::vector<double> v;
    for (const Figures& f : runs) v.push_back(static_cast<double>(field(f)));
    return MedianOf(v);
  };
  Figures m;
  m.wall = med([](const Figures& f) { return f.wall; });
  m.prompt_tps = med([](const Figures& f) { return f.prompt_tps; });
  m.gen_tps = med([](const Figures& f) { return f.gen_tps; });
  m.hit_rate = med([](const Figures& f) { return f.hit_rate; });
  m.ttft.p50 = med([](const Figures& f) { return f.ttft.p50; });
  m.ttft.p90 = med([](const Figures& f) { return f.ttft.p90; });
  m.ttft.p99 = med([](const Figures& f) { return f.ttft.p99; });
  m.itl.p50 = med([](const Figures& f) { return f.itl.p50; });
  m.itl.p90 = med([](const Figures& f) { return f.itl.p90; });
  m.itl.p99 = med([](const Figures& f) { return f.itl.p99; });
  m.peak_pages = static_cast<int64_t>(med([](const Figures& f) { return f.peak_pages; }));
  m.steps = static_cast<int64_t>(med([](const Figures& f) { return f.steps; }));
  m.tokens = static_cast<int64_t>(med([](const Figures& f) { return f.tokens; }));
  m.preemptions = static_cast<int64_t>(med([](const Figures& f) { return f.preemptions; }));
  m.sched_share = med([](const Figures& f) { return f.sched_share; });
  m.sample_share = med([](const Figures& f) { return f.sample_share; });
  m.forward_share = med([](const Figures& f) { return f.forward_share; });
  m.mtp_share = med([](const Figures& f) { return f.mtp_share; });
  m.verify_share = med([](const Figures& f) { return f.verify_share; });
  m.generated = static_cast<int64_t>(med([](const Figures& f) { return f.generated; }));
  m.verifications = static_cast<int64_t>(med([](const Figures& f) { return f.verifications; }));
  for (int j = 0; j < engine::kMaxSpeculativeTokens; ++j) {
    m.drafts_at[j] = med([j](const Figures& f) { return f.drafts_at[j]; });
    m.accepted_at[j] = med([j](const Figures& f) { return f.accepted_at[j]; });
  }
  m.drafts = static_cast<int64_t>(med([](const Figures& f) { return f.drafts; }));
  m.accepted_drafts = static_cast<int64_t>(med([](const Figures& f) { return f.accepted_drafts; }));
  return m;
}

// Per draft position: the share of drafts at that position that were accepted.
std::vector<double> AcceptanceByPosition(const Figures& f, int positions) {
  std::vector<double> out;
  for (int j = 0; j < positions; ++j) {
    out.push_back(f.drafts_at[j] > 0 ? f.accepted_at[j] / f.drafts_at[j] : 0.0);
  }
  return out;
}

// Tokens a verification step yields per sequence: the sampled one plus the accepted drafts.
double MeanAcceptedLength(const Figures& f) {
  return f.verifications ? 1.0 + static_cast<double>(f.accepted_drafts) / f.verifications : 0.0;
}

nlohmann::ordered_json ToJson(const Workload& w, const Setting& s, const Figures& f,
                              int threads, int64_t runs, int64_t num_pages, int64_t page_size) {
  return {
      {"num_prompts", w.num_prompts},
      {"input_len", w.input_len},
      {"output_len", w.output_len},
      {"concurrency", s.concurrency},
      {"prefix_share", s.share},
      {"threads", threads},
      {"runs", runs},
      {"wall_s", f.wall},
      {"prompt_tokens_per_s", f.prompt_tps},
      {"generated_tokens_per_s", f.gen_tps},
      {"ttft_ms", {{"p50", f.ttft.p50}, {"p90", f.ttft.p90}, {"p99", f.ttft.p99}}},
      {"itl_ms", {{"p50", f.itl.p50}, {"p90", f.itl.p90}, {"p99", f.itl.p99}}},
      {"peak_kv_pages", f.peak_pages},
      {"kv_pages", num_pages},
      {"page_size", page_size},
      {"prefix_cache_hit_rate", f.hit_rate},
      {"steps", f.steps},
      {"scheduler_share", f.sched_share},
      {"sampler_share", f.sample_share},
      {"preemptions", f.preemptions},
      {"num_speculative_tokens", s.speculative},
      {"verifications", f.verifications},
      {"draft_tokens", f.drafts},
      {"accepted_draft_tokens", f.accepted_drafts},
      {"draft_acceptance_rate", f.drafts ? static_cast<double>(f.accepted_drafts) / f.drafts : 0.0},
      {"acceptance_by_position", AcceptanceByPosition(f, s.speculative)},
      {"mean_accepted_length", MeanAcceptedLength(f)},
      {"generated_tokens_per_step", f.steps ? static_cast<double>(f.generated) / f.steps : 0.0},
      {"mtp_share", f.mtp_share},
      {"verify_forward_share", f.verify_share},
  };
}

void Print(const Workload& w, const Setting& s, const Figures& f, int threads, int64_t runs,
           int64_t num_pages, int64_t page_size) {
  const int64_t shared = static_cast<int64_t>(s.share * w.input_len + 0.5);
  const std::string prompts =
      w.file_prompts.empty()
          ? absl::StrCat("prompt ", w.input_len, " tokens, ", shared, " shared")
          : absl::StrCat(w.file_prompts.size(), " prompts from --prompts-file");
  std::printf("requests         %lld (%s; output %lld), concurrency %lld, %d threads%s%s\n",
              static_cast<long long>(w.num_prompts), prompts.c_str(),
              static_cast<long long>(w.output_len), static_cast<long long>(s.concurrency),
              threads,
              s.speculative ? absl::StrCat(", MTP drafts ", s.speculative).c_str() : "",
              runs > 1 ? absl::StrCat(", medians of ", runs, " runs").c_str() : "");
  std::printf("wall             %.2f s\n", f.wall);
  std::printf("throughput       prompt %.0f tokens/s, generated %.1f tokens/s\n", f.prompt_tps,
              f.gen_tps);
  std::printf("TTFT             p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n", f.ttft.p50, f.ttft.p90,
              f.ttft.p99);
  std::printf("ITL              p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", f.itl.p50, f.itl.p90,
              f.itl.p99);
  std::printf("KV cache         peak %lld of %lld pages (%lld tokens each), prefix-cache hit "
              "rate %.1f%%\n",
              static_cast<long long>(f.peak_pages), static_cast<long long>(num_pages),
              static_cast<long long>(page_size), 100.0 * f.hit_rate);
  std::printf("steps            %lld, %.1f tokens per step, %lld preemptions\n",
              static_cast<long long>(f.steps),
              f.steps ? static_cast<double>(f.tokens) / f.steps : 0.0,
              static_cast<long long>(f.preemptions));
  std::printf("step time        scheduler %.2f%%, forward %.1f%%, sampling %.1f%%\n",
              100.0 * f.sched_share, 100.0 * f.forward_share, 100.0 * f.sample_share);
  if (f.drafts > 0) {
    std::string by_position;
    for (double a : AcceptanceByPosition(f, s.speculative)) {
      absl::StrAppend(&by_position, by_position.empty() ? "" : ", ",
                      absl::StrFormat("%.1f%%", 100.0 * a));
    }
    std::printf("speculative      %lld of %lld MTP drafts accepted (%.1f%%; by position %s); "
                "mean accepted length %.2f tokens per verification, %.2f generated tokens per "
                "step\n",
                static_cast<long long>(f.accepted_drafts), static_cast<long long>(f.drafts),
                100.0 * f.accepted_drafts / f.drafts, by_position.c_str(), MeanAcceptedLength(f),
                f.steps ? static_cast<double>(f.generated) / f.steps : 0.0);
    std::printf("spec time        drafting (MTP module) %.1f%% of step time, forward of verifying "
                "steps %.1f%%\n",
                100.0 * f.mtp_share, 100.0 * f.verify_share);
  }
}

}  // namespace

std::vector<FlagSpec> EngineBenchFlags() {
  std::vector<FlagSpec> specs = EngineFlags();
  specs.push_back({"num-prompts", "engine benchmark: requests per run", ""});
  specs.push_back({"input-len", "engine benchmark: prompt tokens per request", "128"});
  specs.push_back({"output-len", "engine benchmark: generated tokens per request", "128"});
  specs.push_back({"concurrency",
                   "engine benchmark: requests in flight; a list (1,16) runs each, side by side",
                   "16"});
  specs.push_back({"prefix-share",
                   "engine benchmark: fraction of each prompt shared by all; a list (0,0.5) "
                   "runs each",
                   "0"});
  specs.push_back({"prompts-file",
                   "engine benchmark: prompts from this file instead of random ids, one per line "
                   "(a JSON string, or plain text); request i gets prompt i mod count",
                   ""});
  specs.push_back({"json", "engine benchmark: print the figures as JSON", "", true});
  return specs;
}

absl::Status RunEngineBench(const Flags& flags, ModelSession& session) {
  DSERVE_ASSIGN_OR_RETURN(const std::vector<int> speculative, ParseSpeculativeTokens(flags));
  // The engine flags but one draft count; each setting sets its own.
  engine::EngineConfig config;
  {
    Flags single = flags;
    if (flags.Has("num-speculative-tokens")) single.Set("num-speculative-tokens", "0");
    DSERVE_ASSIGN_OR_RETURN(config, ParseEngineConfig(single, session));
  }
  Workload w;
  DSERVE_ASSIGN_OR_RETURN(w.num_prompts, flags.GetInt("num-prompts", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(w.input_len, flags.GetInt("input-len", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(w.output_len, flags.GetInt("output-len", 1, 1 << 20));
  if (flags.Has("prompts-file")) {
    DSERVE_ASSIGN_OR_RETURN(w.file_prompts,
                            LoadPromptsFile(flags.Get("prompts-file"), flags.Get("model")));
  }
  int64_t runs = 1;
  if (flags.Has("runs")) {
    DSERVE_ASSIGN_OR_RETURN(runs, flags.GetInt("runs", 1, 100));
  }
  DSERVE_ASSIGN_OR_RETURN(std::vector<int64_t> concurrencies,
                          ParseList<int64_t>("concurrency", flags.Get("concurrency"), 1, 1 << 16));
  DSERVE_ASSIGN_OR_RETURN(std::vector<double> shares,
                          ParseList<double>("prefix-share", flags.Get("prefix-share"), 0.0, 1.0));
  std::vector<Setting> settings;
  for (double share : shares) {
    for (int64_t c : concurrencies) {
      for (int k : speculative) settings.push_back({c, share, k});
    }
  }
  const bool json = flags.GetBool("json");
  const int threads = session.threads;

  // Runs interleave the settings (run 1 of each, then run 2 of each, ...) so that a noisy
  // host affects all of them alike; every figure is the median over runs.
  std::vector<std::vector<Figures>> results(settings.size());
  int64_t num_pages = 0, page_size = 0;
  for (int64_t r = 0; r < runs; ++r) {
    for (size_t i = 0; i < settings.size(); ++i) {
      DSERVE_ASSIGN_OR_RETURN(Figures f, RunOnce(session, config, w, settings[i], !json,
                                                 &num_pages, &page_size));
      results[i].push_back(f);
    }
  }
  std::vector<Figures> medians;
  for (const auto& v : results) medians.push_back(Medians(v));

  if (json) {
    if (settings.size() == 1) {
      std::printf("%s\n", ToJson(w, settings[0], medians[0], threads, runs, num_pages, page_size)
                              .dump()
                              .c_str());
    } else {
      nlohmann::ordered_json all = nlohmann::ordered_json::array();
      for (size_t i = 0; i < settings.size(); ++i) {
        all.push_back(ToJson(w, settings[i], medians[i], threads, runs, num_pages, page_size));
      }
      std::printf("%s\n", nlohmann::ordered_json{{"results", all}}.dump().c_str());
    }
    return absl::OkStatus();
  }
  for (size_t i = 0; i < settings.size(); ++i) {
    if (i > 0) std::printf("\n");
    Print(w, settings[i], medians[i], threads, runs, num_pages, page_size);
  }
  if (settings.size() > 1) {
    // With several draft counts, each setting against the same concurrency and share with the
    // first draft count; otherwise against the first setting.
    const bool by_drafts = speculative.size() > 1;
    std::printf("\nratios to %s (medians of per-run ratios)\n",
                by_drafts ? absl::StrCat("MTP drafts ", speculative[0], " at the same concurrency")
                                .c_str()
                          : "the first setting");
    for (size_t i = 1; i < settings.size(); ++i) {
      const size_t base = by_drafts ? i - i % speculative.size() : 0;
      if (base == i) continue;
      std::vector<double> gen, prompt;
      for (int64_t r = 0; r < runs; ++r) {
        gen.push_back(results[i][r].gen_tps / results[base][r].gen_tps);
        prompt.push_back(results[i][r].prompt_tps / results[base][r].prompt_tps);
      }
      std::printf("concurrency %lld, share %.2f, MTP drafts %d: generated %.2fx, prompt %.2fx\n",
                  static_cast<long long>(settings[i].concurrency), settings[i].share,
                  settings[i].speculative, MedianOf(gen), MedianOf(prompt));
    }
  }
  return absl::OkStatus();
}

}  // namespace dserve::cli
