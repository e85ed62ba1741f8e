// ModelConfig: the architecture read from a checkpoint's config.json (model_type deepseek_v3
// or deepseek_v2), with every field the forward pass uses, validated once at load.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/router_config.h"

namespace dserve::models {

using kernels::ScoringFunc;
using kernels::TopkMethod;

struct RopeScaling {
  bool yarn = false;  // false: plain RoPE
  double factor = 1.0;
  double original_max_position_embeddings = 4096;
  double beta_fast = 32;
  double beta_slow = 1;
  double mscale = 1;
  double mscale_all_dim = 0;
};

struct ModelConfig {
  std::string model_type;  // "deepseek_v3" or "deepseek_v2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP layers
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int64_t q_lora_rank = 0;  // 0: queries come from one q_proj (DeepSeek-V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;

  // Mixture of experts (n_routed_experts == 0: every layer is dense).
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  int n_group = 1;
  int topk_group = 1;
  TopkMethod topk_method = TopkMethod::kGreedy;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;

  int num_nextn_predict_layers = 0;  // MTP modules, stored after the main layers
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  // quantization_config: FP8 block-scaled weights.
  bool fp8 = false;
  int64_t weight_block_size[2] = {128, 128};

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool IsMoeLayer(int layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  bool is_v3() const { return model_type == "deepseek_v3"; }
  // The softmax scale of attention, including YaRN's mscale correction.
  double SoftmaxScale() const;
  kernels::RouterConfig Router() const;
};

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source_name);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// YaRN's attention-temperature factor: 0.1 * mscale * ln(scale) + 1 for scale > 1.
double YarnMscale(double scale, double mscale);

}  // namespace dserve::models
