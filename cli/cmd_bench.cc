// dserve bench: prompt (prefill) and decode throughput of single-stream greedy generation,
// median of several runs, with the decode step's weight traffic set against the machine's
// measured read bandwidth.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/engine_bench.h"
#include "cli/memory_bandwidth.h"
#include "cli/model_session.h"
#include "cli/spec_step_costs.h"
#include "core/progress.h"
#include "models/greedy_decode.h"

namespace dserve::cli {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Weight bytes one decode token reads: every projection of every main layer (routed experts
// in proportion top_k / n_experts), the LM head, and one embedding row.
double DecodeWeightBytes(const models::DeepseekModel& model) {
  const models::ModelConfig& c = model.config();
  const std::string mtp_prefix = absl::StrCat("model.layers.", c.num_hidden_layers, ".");
  double bytes = 0;
  for (const auto& [name, e] : model.checkpoint().tensors()) {
    if (name.rfind(mtp_prefix, 0) == 0) continue;
    if (name == "model.embed_tokens.weight") {
      bytes += static_cast<double>(e->bytes) / c.vocab_size;
    } else if (name.find(".mlp.experts.") != std::string::npos) {
      bytes += static_cast<double>(e->bytes) * c.num_experts_per_tok / c.n_routed_experts;
    } else {
      bytes += static_cast<double>(e->bytes);
    }
  }
  return bytes;
}

absl::Status Run(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(ModelSession s, OpenModel(flags));
  if (!s.model) return FollowOnly("bench", s);
  if (flags.GetBool("step-costs")) return RunStepCosts(flags, s);
  if (flags.Has("num-prompts")) return RunEngineBench(flags, s);
  DSERVE_ASSIGN_OR_RETURN(int64_t prompt_len, flags.GetInt("prompt-tokens", 1, 1 << 16));
  DSERVE_ASSIGN_OR_RETURN(int64_t decode_len, flags.GetInt("decode-tokens", 2, 1 << 16));
  int64_t runs = 5;
  if (flags.Has("runs")) {
    DSERVE_ASSIGN_OR_RETURN(runs, flags.GetInt("runs", 1, 100));
  }
  const models::ModelConfig& c = s.model->config();

  // A fixed pseudo-random prompt (ids avoid the special tokens at the start of the vocab).
  std::vector<int32_t> prompt(prompt_len);
  uint32_t x = 12345;
  for (auto& t : prompt) {
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>(100 + (x >> 8) % (c.vocab_size - 100));
  }
  models::GreedyOptions o;
  o.max_new_tokens = static_cast<int>(decode_len);
  o.stop_at_eos = false;
  o.mla_mode = s.mla_mode;

  std::vector<double> prefill, decode;
  {
    Progress progress("bench runs (1 warm-up)", runs + 1, "runs");
    DSERVE_RETURN_IF_ERROR(models::GreedyDecode(*s.model, prompt, o).status());  // warm-up
    progress.Advance(1);
    for (int64_t r = 0; r < runs; ++r) {
      DSERVE_ASSIGN_OR_RETURN(models::GreedyResult res, models::GreedyDecode(*s.model, prompt, o));
      prefill.push_back(prompt_len / res.prefill_seconds);
      decode.push_back(res.decode_steps / res.decode_seconds);
      progress.Advance(1);
    }
  }
  const double weight_bytes = DecodeWeightBytes(*s.model);
  const double decode_tps = Median(decode);
  const double effective = weight_bytes * decode_tps / 1e9;

  std::printf("model            %s (%s)\n", flags.Get("model").c_str(), c.model_type.c_str());
  if (s.cpu) {
    std::printf("threads          %d, isa %s\n", s.threads,
                std::string(kernels::cpu::IsaName(s.cpu->isa())).c_str());
  } else {
    std::printf("device           %s\n", std::string(s.ops->name()).c_str());
  }
  std::printf("runs             %lld (+1 warm-up), prompt %lld tokens, decode %lld tokens\n",
              static_cast<long long>(runs), static_cast<long long>(prompt_len),
              static_cast<long long>(decode_len));
  std::printf("prompt           %.0f tokens/s (median; min %.0f, max %.0f)\n", Median(prefill),
              *std::min_element(prefill.begin(), prefill.end()),
              *std::max_element(prefill.begin(), prefill.end()));
  std::printf("decode           %.1f tokens/s (median; min %.1f, max %.1f)\n", decode_tps,
              *std::min_element(decode.begin(), decode.end()),
              *std::max_element(decode.begin(), decode.end()));
  std::printf("decode weights   %.1f MB read per token -> %.2f GB/s\n", weight_bytes / 1e6,
              effective);
  if (!s.cpu) return absl::OkStatus();
  // DRAM: a buffer far beyond any cache. Same-size: a buffer as large as the weights one
  // decode step reads, so caches help it exactly as much as they help decoding.
  const double dram = MeasureReadBandwidth(size_t{1} << 30, s.threads, 5);
  const double same_size = MeasureReadBandwidth(static_cast<size_t>(weight_bytes), s.threads, 5);
  std::printf("read bandwidth   %.2f GB/s streaming 1 GiB (DRAM); %.2f GB/s streaming %.1f MB "
              "(%d threads, medians of 5)\n",
              dram, same_size, weight_bytes / 1e6, s.threads);
  std::printf("ratio            decode reaches %.0f%% of the DRAM figure, %.0f%% of the "
              "same-size figure\n",
              100.0 * effective / dram, 100.0 * effective / same_size);
  return absl::OkStatus();
}

}  // namespace

int RunBench(const Args& args) {
  std::vector<FlagSpec> specs = ModelFlags();
  specs.push_back({"prompt-tokens", "prompt length", "128"});
  specs.push_back({"decode-tokens", "tokens generated per run", "128"});
  specs.push_back({"runs", "timed runs (medians are reported); the engine benchmark's default is 1",
                   ""});
  for (FlagSpec& f : EngineBenchFlags()) specs.push_back(std::move(f));
  for (FlagSpec& f : StepCostFlags()) specs.push_back(std::move(f));
  Flags flags;
  int code;
  if (!ParseOrExit("bench", "Single-stream prompt and decode throughput, median of runs; with --num-prompts, the "
                   "serving engine's throughput and latency under concurrent requests.", specs,
                   args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Run(flags); !s.ok()) return ReportError("bench", s);
  return 0;
}

}  // namespace dserve::cli
