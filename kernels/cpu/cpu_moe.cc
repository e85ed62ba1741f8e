// DeepSeekMoE on the CPU: the gate (scores, group-limited top-k, weights) and the routed
// experts, computed expert by expert over the tokens routed to each.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace dserve::kernels::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Indices of the k largest values, largest first; ties go to the lower index.
void TopK(const float* values, int n, int k, int* out) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::copy(order.begin(), order.begin() + k, out);
}

// Routes one token: logits [experts] -> ids [top_k], weights [top_k].
void RouteToken(const float* logits, const float* bias, const RouterConfig& c, int32_t* ids,
                float* weights) {
  const int E = c.num_experts;
  std::vector<float> scores(E), choice(E);
  if (c.scoring == ScoringFunc::kSoftmax) {
    const float mx = *std::max_element(logits, logits + E);
    float sum = 0.0f;
    for (int e = 0; e < E; ++e) sum += scores[e] = std::exp(logits[e] - mx);
    for (int e = 0; e < E; ++e) scores[e] /= sum;
  } else {
    for (int e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  }
  // The bias steers selection only; weights come from the unbiased scores.
  for (int e = 0; e < E; ++e) choice[e] = scores[e] + (bias ? bias[e] : 0.0f);

  if (c.method != TopkMethod::kGreedy && c.n_group > 1) {
    const int per_group = E / c.n_group;
    std::vector<float> group_score(c.n_group);
    for (int g = 0; g < c.n_group; ++g) {
      const float* v = choice.data() + g * per_group;
      if (c.method == TopkMethod::kNoauxTc) {
        int best[2];
        TopK(v, per_group, 2, best);
        group_score[g] = v[best[0]] + v[best[1]];
      } else {
        group_score[g] = *std::max_element(v, v + per_group);
      }
    }
    std::vector<int> groups(c.topk_group);
    TopK(group_score.data(), c.n_group, c.topk_group, groups.data());
    std::vector<bool> keep(c.n_group, false);
    for (int g : groups) keep[g] = true;
    for (int e = 0; e < E; ++e) {
      if (!keep[e / per_group]) choice[e] = kNegInf;
    }
  }

  std::vector<int> chosen(c.top_k);
  TopK(choice.data(), E, c.top_k, chosen.data());
  float sum = 0.0f;
  for (int k = 0; k < c.top_k; ++k) {
    ids[k] = chosen[k];
    weights[k] = scores[chosen[k]];
    sum += weights[k];
  }
  const bool normalize = c.top_k > 1 && c.norm_topk_prob;
  const bool scale = !(normalize && c.scale_only_unnormalized);
  for (int k = 0; k < c.top_k; ++k) {
    if (normalize) weights[k] /= sum + 1e-20f;
    if (scale) weights[k] *= c.routed_scaling_factor;
  }
}

}  // namespace

void CpuOps::MoeRoute(const Tensor& x, const Weight& router, const Tensor& bias,
                      const RouterConfig& config, Tensor& ids, Tensor& weights) {
  const int64_t T = x.dim(0);
  const int E = config.num_experts, K = config.top_k;
  DSERVE_CHECK(router.rows == E && router.cols == x.dim(1)) << "router shape";
  DSERVE_CHECK(ids.dtype() == DType::kI32 && ids.numel() == T * K) << "ids " << ids.ShapeString();
  DSERVE_CHECK(weights.numel() == T * K) << "weights " << weights.ShapeString();
  DSERVE_CHECK(bias.empty() || bias.numel() == E) << "bias " << bias.ShapeString();
  DSERVE_CHECK(K >= 1 && K <= E && config.n_group >= 1 && E % config.n_group == 0 &&
               config.topk_group >= 1 && config.topk_group <= config.n_group)
      << "router config: " << E << " experts, top " << K << ", " << config.n_group
      << " groups, top " << config.topk_group;
  DSERVE_CHECK(config.method != TopkMethod::kNoauxTc || config.n_group == 1 ||
               E / config.n_group >= 2)
      << "noaux_tc ranks groups by their two best experts";
  std::vector<float> logits(T * E);
  LinearRaw(x.data<float>(), T, router, logits.data());
  const float* b = bias.empty() ? nullptr : bias.data<float>();
  pool_.ParallelFor(T, GrainFor(E * 32), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      RouteToken(logits.data() + t * E, b, config, ids.data<int32_t>() + t * K,
                 weights.data<float>() + t * K);
    }
  });
}

void CpuOps::CountExperts(const Tensor& ids, Tensor& counts) {
  DSERVE_CHECK(ids.dtype() == DType::kI32 && counts.dtype() == DType::kI32) << "I32 ids/counts";
  const int64_t E = counts.numel();
  uint32_t* c = counts.data<uint32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const int32_t e = ids.data<int32_t>()[i];
    DSERVE_CHECK(e >= 0 && e < E) << "expert id " << e;
    ++c[e];
  }
}

void CpuOps::MoeExperts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& ids,
                        const Tensor& weights, Tensor& out) {
  const int64_t T = x.dim(0), H = x.dim(1);
  const int64_t K = ids.numel() / std::max<int64_t>(T, 1);
  const int E = static_cast<int>(experts.size());
  DSERVE_CHECK(out.dim(0) == T && out.dim(1) == H) << "moe output " << out.ShapeString();
  // Tokens (and their weights) per expert, in token order.
  std::vector<std::vector<std::pair<int64_t, float>>> routed(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = ids.data<int32_t>()[t * K + k];
      DSERVE_CHECK(e >= 0 && e < E) << "expert id " << e;
      routed[e].push_back({t, weights.data<float>()[t * K + k]});
    }
  }
  // Experts run in parallel, each on one thread over all its tokens (a decode step gives an
  // expert a handful of tokens: splitting its rows over threads would cost more in hand-offs
  // than it saves). Outputs are then added into each token's row in expert order, so the
  // sum does not depend on the threads.
  std::vector<std::vector<float>> expert_out(E);
  int64_t work = 0;
  for (int e = 0; e < E; ++e) work += static_cast<int64_t>(routed[e].size());
  const int64_t I = experts.empty() ? 0 : experts[0].gate.rows;
  pool_.ParallelFor(E, GrainFor(std::max<int64_t>(1, work / std::max(E, 1)) * 3 * H * I),
                    [&](int64_t b, int64_t end) {
    std::vector<float> xs, gate, up;
    for (int64_t e = b; e < end; ++e) {
      const auto& tokens = routed[e];
      if (tokens.empty()) continue;
      const MlpWeights& m = experts[e];
      const int64_t n = static_cast<int64_t>(tokens.size()), rows = m.gate.rows;
      xs.resize(n * H);
      gate.resize(n * rows);
      up.resize(n * rows);
      expert_out[e].resize(n * H);
      for (int64_t i = 0; i < n; ++i) {
        std::copy_n(x.data<float>() + tokens[i].first * H, H, xs.data() + i * H);
      }
      LinearRaw(xs.data(), n, m.gate, gate.data(), /*parallel=*/false);
      LinearRaw(xs.data(), n, m.up, up.data(), /*parallel=*/false);
      for (int64_t i = 0; i < n * rows; ++i) gate[i] = SiluTimes(gate[i], up[i]);
      LinearRaw(gate.data(), n, m.down, expert_out[e].data(), /*parallel=*/false);
    }
  });
  std::fill(out.data<float>(), out.data<float>() + T * H, 0.0f);
  for (int e = 0; e < E; ++e) {
    const auto& tokens = routed[e];
    for (size_t i = 0; i < tokens.size(); ++i) {
      prims_.axpy(tokens[i].second, expert_out[e].data() + i * H,
                  out.data<float>() + tokens[i].first * H, H);
    }
  }
}

}  // namespace dserve::kernels::cpu
