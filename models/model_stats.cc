#include "models/model_stats.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dserve::models {
namespace {

// Layer index of "model.layers.N....", or -1.
int LayerOf(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (!name.starts_with(prefix)) return -1;
  const size_t end = name.find('.', prefix.size());
  int layer = -1;
  if (!absl::SimpleAtoi(name.substr(prefix.size(), end - prefix.size()), &layer)) return -1;
  return layer;
}

std::string Count(int64_t n) {
  if (n >= 1000000000) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1000000) return absl::StrFormat("%.2fM", n / 1e6);
  return absl::StrCat(n);
}

std::string Bytes(double b) {
  if (b >= 1e9) return absl::StrFormat("%.2f GB", b / 1e9);
  if (b >= 1e6) return absl::StrFormat("%.2f MB", b / 1e6);
  if (b >= 1e3) return absl::StrFormat("%.2f KB", b / 1e3);
  return absl::StrFormat("%.0f B", b);
}

}  // namespace

ModelStats ComputeModelStats(const ModelConfig& c, const Checkpoint& checkpoint) {
  ModelStats s;
  const int mtp_layer = c.num_hidden_layers;
  // Parameters of routed experts per (layer, expert), to subtract the unchosen ones.
  std::map<int, int64_t> routed_by_layer;
  for (const auto& [name, entry] : checkpoint.tensors()) {
    s.bytes_by_dtype[std::string(DTypeName(entry->dtype))] += static_cast<int64_t>(entry->bytes);
    if (name.ends_with("_scale_inv")) continue;  // quantisation metadata, not parameters
    const int64_t n = entry->numel();
    const int layer = LayerOf(name);
    (layer == mtp_layer ? s.mtp_params : s.total_params) += n;
    if (name.find(".mlp.experts.") != std::string::npos) routed_by_layer[layer] += n;
  }
  s.active_params = s.total_params;
  s.mtp_active_params = s.mtp_params;
  for (const auto& [layer, routed] : routed_by_layer) {
    // Each token runs num_experts_per_tok of the layer's n_routed_experts.
    const int64_t inactive = routed - routed / c.n_routed_experts * c.num_experts_per_tok;
    (layer == mtp_layer ? s.mtp_active_params : s.active_params) -= inactive;
  }
  constexpr int64_t kBf16 = 2;
  s.kv_cache_bytes_per_token =
      c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * kBf16;
  s.mha_cache_bytes_per_token =
      c.num_hidden_layers * c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim) * kBf16;
  return s;
}

std::string FormatModelStats(const ModelConfig& c, const ModelStats& s) {
  std::string out;
  absl::StrAppendFormat(&out, "model_type            %s\n", c.model_type);
  absl::StrAppendFormat(&out,
                        "layers                %d (%d dense), hidden %d, %d heads, vocab %d\n",
                        c.num_hidden_layers,
                        c.n_routed_experts > 0
                            ? std::min(c.first_k_dense_replace, c.num_hidden_layers)
                            : c.num_hidden_layers,
                        c.hidden_size, c.num_attention_heads, c.vocab_size);
  if (c.n_routed_experts > 0) {
    absl::StrAppendFormat(&out, "experts               %d routed (%d per token) + %d shared\n",
                          c.n_routed_experts, c.num_experts_per_tok, c.n_shared_experts);
  }
  absl::StrAppendFormat(&out, "parameters            %s total, %s active per token (%s / %s)\n",
                        Count(s.total_params), Count(s.active_params), absl::StrCat(s.total_params),
                        absl::StrCat(s.active_params));
  if (s.mtp_params > 0) {
    absl::StrAppendFormat(&out, "MTP layer             %s total, %s active per token\n",
                          Count(s.mtp_params), Count(s.mtp_active_params));
  }
  out += "bytes by dtype       ";
  int64_t total = 0;
  for (const auto& [dtype, bytes] : s.bytes_by_dtype) {
    absl::StrAppendFormat(&out, " %s %s;", dtype, Bytes(static_cast<double>(bytes)));
    total += bytes;
  }
  absl::StrAppendFormat(&out, " total %s\n", Bytes(static_cast<double>(total)));
  constexpr double k128K = 131072;
  absl::StrAppendFormat(
      &out, "latent KV cache       %s per token, %s per 128K-token sequence (BF16, %d x (%d + %d))\n",
      Bytes(s.kv_cache_bytes_per_token), Bytes(s.kv_cache_bytes_per_token * k128K),
      c.num_hidden_layers, c.kv_lora_rank, c.qk_rope_head_dim);
  absl::StrAppendFormat(
      &out, "MHA-equivalent cache  %s per token, %s per 128K-token sequence (BF16, %d x %d x (%d + %d))\n",
      Bytes(s.mha_cache_bytes_per_token), Bytes(s.mha_cache_bytes_per_token * k128K),
      c.num_hidden_layers, c.num_attention_heads, c.qk_head_dim(), c.v_head_dim);
  absl::StrAppendFormat(&out, "MHA / latent ratio    %.1fx\n",
                        static_cast<double>(s.mha_cache_bytes_per_token) /
                            static_cast<double>(s.kv_cache_bytes_per_token));
  return out;
}

}  // namespace dserve::models
