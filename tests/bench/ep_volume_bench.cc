// ep_volume_bench: what expert parallelism moves per token at DeepSeek-V3's dimensions (256
// routed experts, 8 per token, hidden 7168) for EP 8, 16 and 32, in the target wire format
// (FP8 dispatch with a scale per 128 values, BF16 combine; each token sent once to every other
// rank holding one of its experts) and, last column, in what ExpertParallelMoe moves today
// (an F32 row and an id per remote (token, expert) pair, an F32 row back): the uniform-routing arithmetic (models/ep_volume.h, the README's table), the same
// counted on uniformly drawn experts, and counted on V3's own routing (sigmoid scores with a
// correction bias, 8 groups, the best 4 groups, then the best 8 experts) of random router
// logits, through the CPU backend's router.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "models/ep_volume.h"

namespace {

constexpr int64_t kExperts = 256, kTopK = 8, kHidden = 7168, kTokens = 16384;

std::vector<int32_t> UniformIds(std::mt19937& rng) {
  std::vector<int32_t> ids, pool(kExperts);
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t t = 0; t < kTokens; ++t) {
    // Partial Fisher-Yates: the first k of a shuffle are k distinct uniform experts.
    for (int64_t k = 0; k < kTopK; ++k) {
      std::swap(pool[k], pool[k + rng() % (kExperts - k)]);
      ids.push_back(pool[k]);
    }
  }
  return ids;
}

std::vector<int32_t> V3RoutedIds(std::mt19937& rng) {
  using namespace dserve;
  kernels::cpu::CpuOps ops(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // The router's input is the logits themselves: an identity router matrix.
  Tensor x = Tensor::Zeros(DType::kF32, {kTokens, kExperts});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = normal(rng);
  Tensor eye = Tensor::Zeros(DType::kF32, {kExperts, kExperts});
  for (int64_t e = 0; e < kExperts; ++e) eye.data<float>()[e * kExperts + e] = 1.0f;
  kernels::Weight router;
  router.dtype = DType::kF32;
  router.rows = router.cols = kExperts;
  router.data = eye.raw();
  Tensor bias = Tensor::Zeros(DType::kF32, {kExperts});
  for (int64_t e = 0; e < kExperts; ++e) bias.data<float>()[e] = 0.1f * normal(rng);
  kernels::RouterConfig c;
  c.num_experts = kExperts;
  c.top_k = kTopK;
  c.n_group = 8;
  c.topk_group = 4;
  c.scoring = kernels::ScoringFunc::kSigmoid;
  c.method = kernels::TopkMethod::kNoauxTc;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5f;
  Tensor ids = Tensor::Zeros(DType::kI32, {kTokens, kTopK});
  Tensor weights = Tensor::Zeros(DType::kF32, {kTokens, kTopK});
  ops.MoeRoute(x, router, bias, c, ids, weights);
  return std::vector<int32_t>(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
}

}  // namespace

int main() {
  using dserve::models::CountedEpVolume;
  using dserve::models::EpVolume;
  using dserve::models::UniformEpVolume;
  std::mt19937 rng(2024);
  const std::vector<int32_t> uniform = UniformIds(rng);
  const std::vector<int32_t> routed = V3RoutedIds(rng);
  std::printf("DeepSeek-V3 expert parallelism, per token: ranks it is sent to, then KB moved "
              "(FP8 dispatch %lld B, BF16 combine %lld B per rank), %lld tokens counted\n",
              static_cast<long long>(kHidden + 4 * kHidden / 128),
              static_cast<long long>(2 * kHidden), static_cast<long long>(kTokens));
  std::printf("  EP | ranks: formula  uniform  V3-routed | dispatch KB: formula  V3 | combine "
              "KB: formula  V3 | MB/rank/step at 256 tokens, V3: target  today (F32 per pair)\n");
  for (const int ep : {8, 16, 32}) {
    const EpVolume f = UniformEpVolume(kExperts, kTopK, ep, kHidden);
    const EpVolume u = CountedEpVolume(uniform, kTopK, kExperts, ep, kHidden);
    const EpVolume v = CountedEpVolume(routed, kTopK, kExperts, ep, kHidden);
    std::printf("  %2d |         %6.3f   %6.3f     %6.3f |         %7.2f  %6.2f |        %7.2f "
                " %6.2f |                  %6.2f  %6.2f\n",
                ep, f.remote_ranks, u.remote_ranks, v.remote_ranks, f.dispatch_bytes / 1e3,
                v.dispatch_bytes / 1e3, f.combine_bytes / 1e3, v.combine_bytes / 1e3,
                256 * (v.dispatch_bytes + v.combine_bytes) / 1e6, 256 * v.pair_bytes / 1e6);
  }
  return 0;
}
