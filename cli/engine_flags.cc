#include "cli/engine_flags.h"

#include "cli/gpu_memory.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dserve::cli {

std::vector<FlagSpec> EngineFlags() {
  return {
      {"kv-cache-gb",
       "memory for the latent KV cache (sets the number of pages; cpu default 1, cuda default: "
       "from --gpu-memory-utilization)",
       ""},
      {"gpu-memory-utilization",
       "cuda: share of the GPU's memory for weights, activations and the KV cache", "0.9"},
      {"kv-cache-dtype",
       "bf16|fp8|f32: how cached latents are stored (fp8: E4M3 latent with per-128 scales, "
       "BF16 RoPE key: 656 instead of 1,152 bytes per token and layer in DeepSeek-V3)",
       "bf16"},
      {"page-size", "tokens per KV page", "64"},
      {"max-batched-tokens", "tokens per forward step over all sequences", "512"},
      {"max-num-seqs", "sequences running at once", "64"},
      {"no-prefix-caching", "do not reuse the KV pages of earlier prompts", "", true},
      {"speculative", "mtp: the model's MTP head drafts, the main model verifies (same output)",
       ""},
      {"num-speculative-tokens",
       absl::StrCat("drafts per step with --speculative mtp, 1 to ",
                    engine::kMaxSpeculativeTokens,
                    " (default 1; bench: a list, 0 = off, e.g. 0,1,2,3)"),
       ""},
      {"cuda-graph-max-batch",
       "cuda: decode steps of up to this many sequences replay CUDA graphs recorded at start-up "
       "(0: every step eager)",
       "256"},
  };
}

absl::StatusOr<DType> ParseKvCacheDType(const std::string& name) {
  if (name == "bf16") return DType::kBF16;
  if (name == "fp8") return DType::kF8E4M3;
  if (name == "f32") return DType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv-cache-dtype must be bf16, fp8 or f32, got '", name, "'"));
}

absl::StatusOr<std::vector<int>> ParseSpeculativeTokens(const Flags& flags) {
  const std::string speculative = flags.Get("speculative");
  if (speculative.empty()) {
    if (flags.Has("num-speculative-tokens")) {
      return absl::InvalidArgumentError("--num-speculative-tokens needs --speculative mtp");
    }
    return std::vector<int>{0};
  }
  if (speculative != "mtp") {
    return absl::InvalidArgumentError(
        absl::StrCat("--speculative must be mtp, got '", speculative, "'"));
  }
  if (!flags.Has("num-speculative-tokens")) return std::vector<int>{1};
  std::vector<int> out;
  for (absl::string_view item : absl::StrSplit(flags.Get("num-speculative-tokens"), ',')) {
    int k;
    if (!absl::SimpleAtoi(item, &k) || k < 0 || k > engine::kMaxSpeculativeTokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--num-speculative-tokens: '", std::string(item), "' must be an integer from 0 (off) to ",
          engine::kMaxSpeculativeTokens));
    }
    out.push_back(k);
  }
  return out;
}

absl::StatusOr<engine::EngineConfig> ParseEngineConfig(const Flags& flags,
                                                       const ModelSession& session) {
  engine::EngineConfig c;
  const bool sized = flags.Has("kv-cache-gb");
  if (sized &&
      (!absl::SimpleAtod(flags.Get("kv-cache-gb"), &c.kv_cache_gb) || !(c.kv_cache_gb > 0))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-gb must be a positive number, got '", flags.Get("kv-cache-gb"),
                     "'"));
  }
  double utilization = 0;
  if (!absl::SimpleAtod(flags.Get("gpu-memory-utilization"), &utilization) ||
      !(utilization > 0 && utilization <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu-memory-utilization must be a number in (0, 1], got '",
        flags.Get("gpu-memory-utilization"), "'"));
  }
  DSERVE_ASSIGN_OR_RETURN(c.kv_dtype, ParseKvCacheDType(flags.Get("kv-cache-dtype")));
  DSERVE_ASSIGN_OR_RETURN(c.page_size, flags.GetInt("page-size", 1, 4096));
  DSERVE_ASSIGN_OR_RETURN(c.scheduler.max_batched_tokens,
                          flags.GetInt("max-batched-tokens", 1, 1 << 20));
  DSERVE_ASSIGN_OR_RETURN(c.scheduler.max_num_seqs, flags.GetInt("max-num-seqs", 1, 1 << 16));
  c.enable_prefix_caching = !flags.GetBool("no-prefix-caching");
  DSERVE_ASSIGN_OR_RETURN(const std::vector<int> drafts, ParseSpeculativeTokens(flags));
  if (drafts.size() > 1) {
    return absl::InvalidArgumentError(
        "--num-speculative-tokens takes one value here (lists are for dserve bench)");
  }
  c.num_speculative_tokens = drafts[0];
  DSERVE_ASSIGN_OR_RETURN(c.graph_max_batch, flags.GetInt("cuda-graph-max-batch", 0, 1 << 16));
  c.mla_mode = session.mla_mode;
  c.sampler_threads = session.threads;
  if (!sized && session.ops->device() == Device::kCuda) {
    DSERVE_ASSIGN_OR_RETURN(const double bytes, GpuKvCacheBytes(session, c, utilization));
    c.kv_cache_gb = bytes / (1ull << 30);
  }
  return c;
}

}  // namespace dserve::cli
