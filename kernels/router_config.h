// RouterConfig: how a DeepSeekMoE gate turns router logits into top-k experts and weights.
#pragma once

namespace dserve::kernels {

enum class ScoringFunc { kSoftmax, kSigmoid };
// V2's "greedy" and "group_limited_greedy" (groups ranked by their best expert), V3's
// "noaux_tc" (groups ranked by the sum of their best two bias-corrected scores).
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };

struct RouterConfig {
  int num_experts = 0;
  int top_k = 0;
  int n_group = 1;
  int topk_group = 1;
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  TopkMethod method = TopkMethod::kGreedy;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  // Hugging Face's DeepSeek-V2 scales only weights that were not renormalised; V3 scales
  // always. (Every published checkpoint gives the same result either way.)
  bool scale_only_unnormalized = false;
};

}  // namespace dserve::kernels
