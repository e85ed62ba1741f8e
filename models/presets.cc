#include "models/presets.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dserve::models {
namespace {

using Json = nlohmann::ordered_json;

// DeepSeek-V3's config.json (as published) with the dimensions shrunk.
Json TinyV3Config(bool fp8) {
  Json c = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"ep_size", 1},
      {"first_k_dense_replace", 1},
      {"hidden_act", "silu"},
      {"hidden_size", 256},
      {"initializer_range", 0.02},
      {"intermediate_size", 512},
      {"kv_lora_rank", 128},
      {"max_position_embeddings", 163840},
      {"model_type", "deepseek_v3"},
      {"moe_intermediate_size", 128},
      {"moe_layer_freq", 1},
      {"n_group", 4},
      {"n_routed_experts", 16},
      {"n_shared_experts", 1},
      {"norm_topk_prob", true},
      {"num_attention_heads", 8},
      {"num_experts_per_tok", 4},
      {"num_hidden_layers", 4},
      {"num_key_value_heads", 8},
      {"num_nextn_predict_layers", 1},
      {"q_lora_rank", 128},
      {"qk_nope_head_dim", 32},
      {"qk_rope_head_dim", 16},
      {"rms_norm_eps", 1e-06},
      {"rope_scaling",
       {{"beta_fast", 32},
        {"beta_slow", 1},
        {"factor", 40},
        {"mscale", 1.0},
        {"mscale_all_dim", 1.0},
        {"original_max_position_embeddings", 4096},
        {"type", "yarn"}}},
      {"rope_theta", 10000},
      {"routed_scaling_factor", 2.5},
      {"scoring_func", "sigmoid"},
      {"tie_word_embeddings", false},
      {"topk_group", 2},
      {"topk_method", "noaux_tc"},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", "4.46.3"},
      {"use_cache", true},
      {"v_head_dim", 32},
      {"vocab_size", 129280},
  };
  if (fp8) {
    c["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {128, 128}}};
  }
  return c;
}

// tiny-v3 with V3's grouping of many experts: 64 in 8 groups (best 4), 6 per token.
Json TinyV3ManyExpertsConfig() {
  Json c = TinyV3Config(true);
  c["n_routed_experts"] = 64;
  c["n_group"] = 8;
  c["topk_group"] = 4;
  c["num_experts_per_tok"] = 6;
  return c;
}

// Big enough that every projection takes the FP8 tensor-core GEMM on a GPU (each input width a
// multiple of 512) and the MoE layer has V3's 8 groups: the GPU tests' larger model.
Json SmallV3Config() {
  Json c = TinyV3Config(true);
  c["hidden_size"] = 2048;
  c["intermediate_size"] = 4096;
  c["moe_intermediate_size"] = 512;
  c["n_routed_experts"] = 64;
  c["num_experts_per_tok"] = 6;
  c["n_group"] = 8;
  c["topk_group"] = 4;
  c["num_attention_heads"] = 16;
  c["num_key_value_heads"] = 16;
  c["num_hidden_layers"] = 2;
  c["q_lora_rank"] = 1536;
  c["kv_lora_rank"] = 512;
  c["qk_nope_head_dim"] = 128;
  c["qk_rope_head_dim"] = 64;
  c["v_head_dim"] = 128;
  return c;
}

// DeepSeek-V3's own dimensions as published (hidden 7168, 128 heads, q_lora 1536, kv_lora 512,
// 256 experts of 2048 + 1 shared, 8 per token, 8 groups / top 4, intermediate 18432) with N
// layers, the first dense, and no MTP layer: one dense and N - 1 MoE layers of the real model's
// size, for measuring a decode step on one GPU (N <= 4 fits an H200 in FP8: about 4.3 GB plus
// 11.5 GB per MoE layer).
Json V3LayersConfig(int layers) {
  Json c = TinyV3Config(true);
  c["hidden_size"] = 7168;
  c["intermediate_size"] = 18432;
  c["moe_intermediate_size"] = 2048;
  c["n_routed_experts"] = 256;
  c["num_experts_per_tok"] = 8;
  c["n_group"] = 8;
  c["topk_group"] = 4;
  c["num_attention_heads"] = 128;
  c["num_key_value_heads"] = 128;
  c["num_hidden_layers"] = layers;
  c["num_nextn_predict_layers"] = 0;
  c["q_lora_rank"] = 1536;
  c["kv_lora_rank"] = 512;
  c["qk_nope_head_dim"] = 128;
  c["qk_rope_head_dim"] = 64;
  c["v_head_dim"] = 128;
  return c;
}

// DeepSeek-V2-Lite's config.json shape: no q_lora, softmax scores, greedy top-k, two shared
// experts, YaRN with mscale 0.707, BF16 weights, no MTP.
Json TinyV2Config(const std::string& topk_method, int n_group, int topk_group) {
  return Json{
      {"architectures", {"DeepseekV2ForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"aux_loss_alpha", 0.001},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"first_k_dense_replace", 1},
      {"hidden_act", "silu"},
      {"hidden_size", 256},
      {"initializer_range", 0.02},
      {"intermediate_size", 512},
      {"kv_lora_rank", 128},
      {"max_position_embeddings", 163840},
      {"model_type", "deepseek_v2"},
      {"moe_intermediate_size", 128},
      {"moe_layer_freq", 1},
      {"n_group", n_group},
      {"n_routed_experts", 16},
      {"n_shared_experts", 2},
      {"norm_topk_prob", false},
      {"num_attention_heads", 8},
      {"num_experts_per_tok", 4},
      {"num_hidden_layers", 4},
      {"num_key_value_heads", 8},
      {"q_lora_rank", nullptr},
      {"qk_nope_head_dim", 32},
      {"qk_rope_head_dim", 16},
      {"rms_norm_eps", 1e-06},
      {"rope_scaling",
       {{"beta_fast", 32},
        {"beta_slow", 1},
        {"factor", 40},
        {"mscale", 0.707},
        {"mscale_all_dim", 0.707},
        {"original_max_position_embeddings", 4096},
        {"type", "yarn"}}},
      {"rope_theta", 10000},
      {"routed_scaling_factor", 1.0},
      {"scoring_func", "softmax"},
      {"seq_aux", true},
      {"tie_word_embeddings", false},
      {"topk_group", topk_group},
      {"topk_method", topk_method},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", "4.46.3"},
      {"use_cache", true},
      {"v_head_dim", 32},
      {"vocab_size", 129280},
  };
}

}  // namespace

const std::vector<Preset>& AllPresets() {
  static const std::vector<Preset> presets = {
      {"tiny-v3",
       "DeepSeek-V3 layout, hidden 256, 4 layers (1 dense), 16 experts + 1 shared, FP8 "
       "128x128 block-scaled projections, one MTP layer",
       TinyV3Config(true)},
      {"tiny-v3-bf16", "tiny-v3 with every weight in BF16 (no quantization_config)",
       TinyV3Config(false)},
      {"tiny-v3-e64",
       "tiny-v3 with 64 routed experts in 8 groups (best 4), 6 per token: expert-parallel "
       "tests at 2, 4 and 8 ranks",
       TinyV3ManyExpertsConfig()},
      {"small-v3",
       "DeepSeek-V3 layout with V3's attention dimensions (16 heads), hidden 2048, 2 layers (1 "
       "dense), 64 experts of 512 (6 per token, 8 groups / top 4) + 1 shared, FP8, one MTP "
       "layer: the GPU tests' larger model (2.6 GB)",
       SmallV3Config()},
      {"tiny-v2",
       "DeepSeek-V2-Lite layout, hidden 256, 4 layers, no q_lora, softmax greedy routing, "
       "2 shared experts, BF16, no MTP",
       TinyV2Config("greedy", 1, 1)},
      {"tiny-v2-grouped",
       "tiny-v2 with DeepSeek-V2's group_limited_greedy routing (4 groups, best 2)",
       TinyV2Config("group_limited_greedy", 4, 2)},
  };
  return presets;
}

absl::StatusOr<Preset> FindPreset(const std::string& name) {
  constexpr std::string_view kV3Layers = "v3-layers-";
  if (name.starts_with(kV3Layers)) {
    const std::string digits = name.substr(kV3Layers.size());
    int layers = 0;
    if (digits.empty() || digits.size() > 2 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        !absl::SimpleAtoi(digits, &layers) || layers < 1 || layers > 61) {
      return absl::InvalidArgumentError(
          absl::StrCat("preset '", name, "': v3-layers-N takes N from 1 to 61"));
    }
    return Preset{name,
                  absl::StrCat("DeepSeek-V3's dimensions with ", layers,
                               " layer(s) (the first dense), FP8, no MTP"),
                  V3LayersConfig(layers)};
  }
  std::string known;
  for (const Preset& p : AllPresets()) {
    if (p.name == name) return p;
    absl::StrAppend(&known, known.empty() ? "" : ", ", p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset '", name, "' (known: ", known, ", v3-layers-N)"));
}

}  // namespace dserve::models
