// CpuOps::MoeRoute against a brute-force search over every expert (and group) subset, for all
// scoring functions, top-k methods and weight options; CpuOps::MoeExperts against a float64
// SwiGLU mixture.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/router_config.h"
#include "tests/support/test_weight.h"

namespace dserve::kernels::cpu {
namespace {

using testing::SupportedIsas;
using testing::TestWeight;

// The F32 identity [E, E] as a router weight.
TestWeight IdentityRouter(int E) {
  std::vector<float> identity(E * E, 0.0f);
  for (int e = 0; e < E; ++e) identity[e * E + e] = 1.0f;
  return testing::MakeF32TestWeight(E, E, identity);
}

// Calls fn(subset) for every k-element subset of `items`.
void ForEachSubset(const std::vector<int>& items, int k,
                   const std::function<void(const std::vector<int>&)>& fn) {
  std::vector<int> pick;
  std::function<void(size_t)> rec = [&](size_t start) {
    if (static_cast<int>(pick.size()) == k) return fn(pick);
    for (size_t i = start; i + (k - pick.size()) <= items.size(); ++i) {
      pick.push_back(items[i]);
      rec(i + 1);
      pick.pop_back();
    }
  };
  rec(0);
}

// The subset of `items` of size k with the largest sum of `value`, and how far ahead of the
// runner-up it is (infinite when there is only one subset).
struct Best {
  std::vector<int> subset;
  double margin = std::numeric_limits<double>::infinity();
};

Best BestSubset(const std::vector<int>& items, int k, const std::vector<double>& value) {
  Best best;
  double top = -std::numeric_limits<double>::infinity(), second = top;
  ForEachSubset(items, k, [&](const std::vector<int>& s) {
    double sum = 0;
    for (int i : s) sum += value[i];
    if (sum > top) {
      second = top;
      top = sum;
      best.subset = s;
    } else if (sum > second) {
      second = sum;
    }
  });
  best.margin = top - second;
  return best;
}

// The brute-force router: selection by exhaustive search over subsets, in double.
struct Routed {
  std::map<int, double> weight;  // expert id -> final weight
  double margin = 0;             // smallest win over a runner-up along the way
};

Routed BruteForceRoute(const std::vector<double>& logits, const std::vector<double>& bias,
                       const RouterConfig& c) {
  const int E = c.num_experts;
  std::vector<double> score(E), choice(E);
  if (c.scoring == ScoringFunc::kSoftmax) {
    double sum = 0;
    for (int e = 0; e < E; ++e) sum += std::exp(logits[e]);
    for (int e = 0; e < E; ++e) score[e] = std::exp(logits[e]) / sum;
  } else {
    for (int e = 0; e < E; ++e) score[e] = 1 / (1 + std::exp(-logits[e]));
  }
  for (int e = 0; e < E; ++e) choice[e] = score[e] + (bias.empty() ? 0 : bias[e]);

  Routed out;
  out.margin = std::numeric_limits<double>::infinity();
  std::vector<int> candidates;
  if (c.method == TopkMethod::kGreedy) {
    for (int e = 0; e < E; ++e) candidates.push_back(e);
  } else {
    // Group score: the best expert (group_limited_greedy) or the best pair (noaux_tc).
    const int per = E / c.n_group;
    std::vector<double> group_score(c.n_group);
    std::vector<int> groups(c.n_group);
    for (int g = 0; g < c.n_group; ++g) {
      groups[g] = g;
      std::vector<int> members(per);
      for (int i = 0; i < per; ++i) members[i] = g * per + i;
      const int take = c.method == TopkMethod::kNoauxTc ? 2 : 1;
      group_score[g] = -std::numeric_limits<double>::infinity();
      ForEachSubset(members, take, [&](const std::vector<int>& s) {
        double sum = 0;
        for (int e : s) sum += choice[e];
        group_score[g] = std::max(group_score[g], sum);
      });
    }
    const Best kept = BestSubset(groups, c.topk_group, group_score);
    out.margin = kept.margin;
    for (int g : kept.subset) {
      for (int i = 0; i < per; ++i) candidates.push_back(g * per + i);
    }
  }
  const Best chosen = BestSubset(candidates, c.top_k, choice);
  out.margin = std::min(out.margin, chosen.margin);
  double sum = 0;
  for (int e : chosen.subset) sum += score[e];
  const bool normalized = c.norm_topk_prob && c.top_k > 1;
  for (int e : chosen.subset) {
    double w = score[e];
    if (normalized) w /= sum;
    if (!(normalized && c.scale_only_unnormalized)) w *= c.routed_scaling_factor;
    out.weight[e] = w;
  }
  return out;
}

std::string Describe(const RouterConfig& c, bool bias) {
  const char* method = c.method == TopkMethod::kGreedy               ? "greedy"
                       : c.method == TopkMethod::kGroupLimitedGreedy ? "group_limited_greedy"
                                                                     : "noaux_tc";
  return std::string(method) + (c.scoring == ScoringFunc::kSoftmax ? " softmax" : " sigmoid") +
         " E=" + std::to_string(c.num_experts) + " k=" + std::to_string(c.top_k) +
         " groups=" + std::to_string(c.n_group) + "/" + std::to_string(c.topk_group) +
         (bias ? " bias" : "") + (c.norm_topk_prob ? " norm" : "") +
         (c.scale_only_unnormalized ? " scale_only_unnormalized" : "") +
         " factor=" + std::to_string(c.routed_scaling_factor);
}

// Checks one MoeRoute call: ids as a set, weights matched by id.
void ExpectRouted(const Tensor& ids, const Tensor& weights, int64_t t, int k, const Routed& want) {
  std::map<int, double> got;
  for (int j = 0; j < k; ++j)
    got[ids.data<int32_t>()[t * k + j]] = weights.data<float>()[t * k + j];
  ASSERT_EQ(got.size(), static_cast<size_t>(k)) << "token " << t << ": repeated expert";
  for (const auto& [e, w] : want.weight) {
    ASSERT_TRUE(got.contains(e)) << "token " << t << ": expert " << e << " not chosen";
    EXPECT_NEAR(got[e], w, 1e-5 * std::max(1.0, std::fabs(w))) << "token " << t << " expert " << e;
  }
}

// Router weight = identity [E, E], so x rows are the logits exactly (one product by 1, the
// rest by 0). Logits are redrawn for a token until the brute-force winner beats every
// runner-up by 1e-4, so float rounding inside the kernel cannot flip a choice.
void RunRouteCase(const RouterConfig& c, bool with_bias, int64_t T, std::mt19937& rng) {
  SCOPED_TRACE(Describe(c, with_bias) + " T=" + std::to_string(T));
  const int E = c.num_experts;
  const TestWeight router = IdentityRouter(E);

  std::uniform_real_distribution<float> bias_dist(-0.05f, 0.05f);
  Tensor bias;
  std::vector<double> bias_d;
  if (with_bias) {
    bias = Tensor::Zeros(DType::kF32, {E});
    for (int e = 0; e < E; ++e) bias_d.push_back(bias.data<float>()[e] = bias_dist(rng));
  }
  std::normal_distribution<float> logit(0.0f, 2.0f);
  Tensor x = Tensor::Zeros(DType::kF32, {T, E});
  std::vector<Routed> want(T);
  for (int64_t t = 0; t < T; ++t) {
    for (int attempt = 0;; ++attempt) {
      ASSERT_LT(attempt, 1000) << "could not draw well-separated logits";
      std::vector<double> l(E);
      for (int e = 0; e < E; ++e) l[e] = x.data<float>()[t * E + e] = logit(rng);
      want[t] = BruteForceRoute(l, bias_d, c);
      if (want[t].margin > 1e-4) break;
    }
  }
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(std::string(IsaName(isa)));
    CpuOps ops(2, isa);
    Tensor ids = Tensor::Zeros(DType::kI32, {T, c.top_k});
    Tensor weights = Tensor::Zeros(DType::kF32, {T, c.top_k});
    std::fill_n(ids.data<int32_t>(), T * c.top_k, -1);
    ops.MoeRoute(x, router.w, bias, c, ids, weights);
    for (int64_t t = 0; t < T; ++t) ExpectRouted(ids, weights, t, c.top_k, want[t]);
  }
}

struct RouteShape {
  int E, k, n_group, topk_group;
};

void RunAllOptions(TopkMethod method, const std::vector<RouteShape>& shapes, uint32_t seed) {
  std::mt19937 rng(seed);
  for (const RouteShape& s : shapes) {
    for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
      for (bool bias : {false, true}) {
        for (bool norm : {false, true}) {
          for (bool scale_only : {false, true}) {
            for (float factor : {1.0f, 2.5f}) {
              RouterConfig c;
              c.num_experts = s.E;
              c.top_k = s.k;
              c.n_group = s.n_group;
              c.topk_group = s.topk_group;
              c.scoring = scoring;
              c.method = method;
              c.norm_topk_prob = norm;
              c.routed_scaling_factor = factor;
              c.scale_only_unnormalized = scale_only;
              RunRouteCase(c, bias, /*T=*/s.E >= 32 ? 6 : 9, rng);
            }
          }
        }
      }
    }
  }
}

// An inconsistent RouterConfig is a programmer error at the Ops boundary: it must stop with a
// message, not read past a group (noaux_tc with one expert per group) or an expert array.
TEST(MoeRouteDeathTest, InconsistentConfigStops) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const int E = 8;
  const TestWeight router = IdentityRouter(E);
  Tensor x = Tensor::Zeros(DType::kF32, {1, E});
  auto route = [&](RouterConfig c) {
    CpuOps ops(1);
    Tensor ids = Tensor::Zeros(DType::kI32, {1, c.top_k});
    Tensor weights = Tensor::Zeros(DType::kF32, {1, c.top_k});
    ops.MoeRoute(x, router.w, Tensor(), c, ids, weights);
  };
  RouterConfig c;
  c.num_experts = E;
  c.top_k = 2;
  c.method = TopkMethod::kNoauxTc;
  c.scoring = ScoringFunc::kSigmoid;
  c.n_group = 8;  // one expert per group
  c.topk_group = 4;
  EXPECT_DEATH(route(c), "two best experts");
  c.n_group = 3;  // does not divide 8
  c.topk_group = 1;
  EXPECT_DEATH(route(c), "router config");
  c.n_group = 1;
  c.top_k = 9;
  EXPECT_DEATH(route(c), "router config");
}

// The metrics' device-side counter, on the CPU: adds each id's occurrences, keeps what was
// there, and wraps at 2^32 as an unsigned counter.
TEST(CountExperts, AddsOccurrencesAndWraps) {
  CpuOps ops(1);
  Tensor ids = Tensor::Zeros(DType::kI32, {3, 2});
  const int32_t values[] = {2, 0, 2, 3, 2, 0};
  std::copy(values, values + 6, ids.data<int32_t>());
  Tensor counts = Tensor::Zeros(DType::kI32, {4});
  counts.data<uint32_t>()[0] = 0xFFFFFFFFu;
  counts.data<uint32_t>()[1] = 5;
  ops.CountExperts(ids, counts);
  EXPECT_EQ(counts.data<uint32_t>()[0], 1u);  // 0xFFFFFFFF + 2
  EXPECT_EQ(counts.data<uint32_t>()[1], 5u);
  EXPECT_EQ(counts.data<uint32_t>()[2], 3u);
  EXPECT_EQ(counts.data<uint32_t>()[3], 1u);
}

TEST(MoeRoute, Greedy) {
  // n_group > 1 must not matter to greedy.
  RunAllOptions(TopkMethod::kGreedy, {{8, 2, 1, 1}, {16, 6, 1, 1}, {8, 1, 1, 1}, {16, 4, 4, 2}},
                21);
}

TEST(MoeRoute, GroupLimitedGreedy) {
  RunAllOptions(TopkMethod::kGroupLimitedGreedy,
                {{16, 4, 4, 2}, {12, 3, 3, 1}, {32, 8, 8, 4}, {8, 1, 4, 1}, {16, 4, 1, 1}}, 22);
}

TEST(MoeRoute, NoauxTc) {
  RunAllOptions(TopkMethod::kNoauxTc,
                {{16, 4, 4, 2}, {12, 3, 3, 1}, {32, 8, 8, 4}, {8, 1, 4, 1}, {24, 5, 4, 3}}, 23);
}

// DeepSeek-V3's routing on 16 experts: sigmoid scores, noaux_tc keeping 2 of 4 groups, top 4,
// normalised, times 2.5.
RouterConfig V3Router() {
  RouterConfig c;
  c.num_experts = 16;
  c.top_k = 4;
  c.n_group = 4;
  c.topk_group = 2;
  c.scoring = ScoringFunc::kSigmoid;
  c.method = TopkMethod::kNoauxTc;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5f;
  return c;
}

TEST(MoeRoute, SingleTokenAndManyTokens) {
  std::mt19937 rng(24);
  const RouterConfig c = V3Router();
  for (int64_t T : {1, 2, 4, 5, 100}) RunRouteCase(c, true, T, rng);
}

// A dense random router: logits computed in double from x and W here.
TEST(MoeRoute, RandomRouterWeights) {
  std::mt19937 rng(25);
  const int E = 16, H = 64;
  const int64_t T = 40;
  const RouterConfig c = V3Router();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(E * H);
  for (float& v : w) v = normal(rng) * 0.25f;
  const TestWeight router = testing::MakeF32TestWeight(E, H, w);
  Tensor bias = Tensor::Zeros(DType::kF32, {E});
  std::vector<double> bias_d;
  for (int e = 0; e < E; ++e) bias_d.push_back(bias.data<float>()[e] = 0.01f * normal(rng));
  Tensor x = Tensor::Zeros(DType::kF32, {T, H});
  std::vector<Routed> want(T);
  for (int64_t t = 0; t < T; ++t) {
    for (int attempt = 0;; ++attempt) {
      ASSERT_LT(attempt, 1000);
      for (int i = 0; i < H; ++i) x.data<float>()[t * H + i] = normal(rng);
      std::vector<double> logits(E, 0.0);
      for (int e = 0; e < E; ++e) {
        for (int i = 0; i < H; ++i) logits[e] += double{x.data<float>()[t * H + i]} * w[e * H + i];
      }
      want[t] = BruteForceRoute(logits, bias_d, c);
      if (want[t].margin > 1e-4) break;
    }
  }
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(std::string(IsaName(isa)));
    CpuOps ops(2, isa);
    Tensor ids = Tensor::Zeros(DType::kI32, {T, 4});
    Tensor weights = Tensor::Zeros(DType::kF32, {T, 4});
    ops.MoeRoute(x, router.w, bias, c, ids, weights);
    for (int64_t t = 0; t < T; ++t) ExpectRouted(ids, weights, t, 4, want[t]);
  }
}

// ---------------------------------------------------------------------------------------------
// MoeExperts
// ---------------------------------------------------------------------------------------------

constexpr int64_t kHidden = 48, kInter = 32;

// One projection in a chosen dtype, its storage, and its real values.
TestWeight RandomProj(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng, bool poison) {
  std::vector<uint8_t> bytes(rows * cols * DTypeSize(dtype));
  std::normal_distribution<float> normal(0.0f, 0.2f);
  std::uniform_int_distribution<int> bit(0, 1), mant7(0, 7), mant127(0, 127), e8(2, 9);
  std::uniform_int_distribution<int> e_bf(121, 125);
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (dtype == DType::kF32) {
      const float v = poison ? std::numeric_limits<float>::quiet_NaN() : normal(rng);
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    } else if (dtype == DType::kBF16) {
      const uint16_t h = static_cast<uint16_t>((bit(rng) << 15) | (e_bf(rng) << 7) | mant127(rng));
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else {
      bytes[i] = static_cast<uint8_t>((bit(rng) << 7) | (e8(rng) << 3) | mant7(rng));
    }
  }
  std::vector<float> scales;
  if (dtype == DType::kF8E4M3) {
    scales.resize(testing::NumBlockScales(rows, cols));
    std::uniform_real_distribution<float> s(0.02f, 0.08f);
    for (float& v : scales) v = s(rng);
  }
  return testing::MakeTestWeight(dtype, rows, cols, std::move(bytes), std::move(scales));
}

struct Expert {
  TestWeight gate, up, down;
};

// out[t] = sum_k w[t,k] * down(silu(gate x_t) * up x_t), in double, with a per-output error
// bound: the sum of absolute values of every term, where each hidden activation a_i carries
// the float rounding bound of its own gate/up products (1e-5 of their absolute sums, as for a
// single Linear) propagated through silu (|silu'| < 1.1).
void ExpertsReference(const std::vector<Expert>& experts, const std::vector<float>& x,
                      const std::vector<int32_t>& ids, const std::vector<float>& w, int64_t T,
                      int64_t K, std::vector<double>* out, std::vector<double>* bound) {
  out->assign(T * kHidden, 0.0);
  bound->assign(T * kHidden, 1e-6);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) {
      const Expert& e = experts[ids[t * K + k]];
      std::vector<double> a(kInter), a_err(kInter);
      for (int64_t i = 0; i < kInter; ++i) {
        double g = 0, u = 0, g_abs = 0, u_abs = 0;
        for (int64_t c = 0; c < kHidden; ++c) {
          g += x[t * kHidden + c] * e.gate.real[i * kHidden + c];
          u += x[t * kHidden + c] * e.up.real[i * kHidden + c];
          g_abs += std::fabs(x[t * kHidden + c] * e.gate.real[i * kHidden + c]);
          u_abs += std::fabs(x[t * kHidden + c] * e.up.real[i * kHidden + c]);
        }
        const double silu = g / (1 + std::exp(-g));
        a[i] = silu * u;
        a_err[i] = 1e-5 * (1.1 * g_abs * std::fabs(u) + std::fabs(silu) * u_abs + std::fabs(a[i]));
      }
      const double wk = w[t * K + k];
      for (int64_t j = 0; j < kHidden; ++j) {
        double y = 0, own = 0, carried = 0;
        for (int64_t i = 0; i < kInter; ++i) {
          const double d = e.down.real[j * kInter + i];
          y += d * a[i];
          own += std::fabs(d * a[i]);
          carried += std::fabs(d) * a_err[i];
        }
        (*out)[t * kHidden + j] += wk * y;
        // The down projection's own rounding (as for Linear), the activations' carried error,
        // and the weighted sum's few additions (inside the 1e-5).
        (*bound)[t * kHidden + j] += std::fabs(wk) * (1e-5 * own + carried);
      }
    }
  }
}

class MoeExpertsTest : public ::testing::Test {
 protected:
  // Six experts: 0 BF16, 1 FP8 (128x128 scales), the rest F32; `unused` experts hold NaN
  // weights, so any work done for them (even times a zero weight) poisons the output.
  void MakeExperts(const std::vector<int>& unused, std::mt19937& rng) {
    experts_.clear();
    for (int e = 0; e < 6; ++e) {
      const DType dtype = e == 0 ? DType::kBF16 : e == 1 ? DType::kF8E4M3 : DType::kF32;
      const bool poison = std::find(unused.begin(), unused.end(), e) != unused.end();
      ASSERT_TRUE(!poison || dtype == DType::kF32);
      experts_.push_back({RandomProj(dtype, kInter, kHidden, rng, poison),
                          RandomProj(dtype, kInter, kHidden, rng, poison),
                          RandomProj(dtype, kHidden, kInter, rng, poison)});
    }
    mlps_.clear();
    for (const Expert& e : experts_) mlps_.push_back({e.gate.w, e.up.w, e.down.w});
  }

  void Check(const std::vector<int32_t>& ids, const std::vector<float>& w, int64_t T, int64_t K,
             std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Tensor x = Tensor::Zeros(DType::kF32, {T, kHidden});
    std::vector<float> xv(T * kHidden);
    for (int64_t i = 0; i < T * kHidden; ++i) xv[i] = x.data<float>()[i] = normal(rng);
    Tensor ids_t = Tensor::Zeros(DType::kI32, {T, K});
    Tensor w_t = Tensor::Zeros(DType::kF32, {T, K});
    std::copy(ids.begin(), ids.end(), ids_t.data<int32_t>());
    std::copy(w.begin(), w.end(), w_t.data<float>());
    std::vector<double> want, bound;
    ExpertsReference(experts_, xv, ids, w, T, K, &want, &bound);
    for (Isa isa : SupportedIsas()) {
      SCOPED_TRACE(std::string(IsaName(isa)) + " T=" + std::to_string(T));
      CpuOps ops(2, isa);
      Tensor out = Tensor::Zeros(DType::kF32, {T, kHidden});
      std::fill_n(out.data<float>(), T * kHidden, std::numeric_limits<float>::quiet_NaN());
      ops.MoeExperts(x, mlps_, ids_t, w_t, out);
      int bad = 0;
      for (int64_t i = 0; i < T * kHidden; ++i) {
        const double got = out.data<float>()[i];
        if (!(std::fabs(got - want[i]) <= bound[i]) && ++bad <= 5) {
          ADD_FAILURE() << "token " << i / kHidden << " value " << i % kHidden << ": got " << got
                        << ", want " << want[i] << " +- " << bound[i];
        }
      }
      EXPECT_EQ(bad, 0);
      // The bound above is a worst case (every rounding in the same direction); typical
      // float error is ~1e-7 of the output scale, so also hold the largest error to 1e-5 of
      // the largest output, as the MLA tests do.
      double err = 0, scale = 0;
      for (int64_t i = 0; i < T * kHidden; ++i) {
        err = std::max(err, std::fabs(out.data<float>()[i] - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
      }
      EXPECT_LE(err, 1e-5 * scale);
    }
  }

  std::vector<Expert> experts_;
  std::vector<MlpWeights> mlps_;
};

TEST_F(MoeExpertsTest, ManyTokensSomeExpertsIdle) {
  std::mt19937 rng(31);
  MakeExperts({2, 5}, rng);
  // 20 tokens, 2 experts each: expert 0 gets all 20 (matrix-matrix path), 1 and 3 get 8 each,
  // 4 gets 4 (matrix-vector path), 2 and 5 none.
  const int64_t T = 20, K = 2;
  std::vector<int32_t> ids;
  std::vector<float> w;
  std::uniform_real_distribution<float> weight(0.1f, 1.5f);
  for (int64_t t = 0; t < T; ++t) {
    int32_t pair[2] = {0, t % 5 == 0 ? 4 : (t % 2 ? 1 : 3)};
    if (t % 3 == 0) std::swap(pair[0], pair[1]);  // slot order must not matter
    ids.insert(ids.end(), pair, pair + 2);
    w.push_back(weight(rng));
    w.push_back(weight(rng));
  }
  Check(ids, w, T, K, rng);
}

TEST_F(MoeExpertsTest, SingleToken) {
  std::mt19937 rng(32);
  MakeExperts({3, 4}, rng);
  Check({5, 1, 0}, {0.7f, 0.2f, 1.3f}, 1, 3, rng);
  Check({2}, {2.5f}, 1, 1, rng);
}

TEST_F(MoeExpertsTest, NegativeAndZeroWeights) {
  std::mt19937 rng(33);
  MakeExperts({}, rng);
  Check({0, 1, 2, 3, 4, 5, 1, 4}, {-0.5f, 0.0f, 1.0f, 2.0f, -1.0f, 0.25f, 3.0f, 0.0f}, 4, 2, rng);
}

}  // namespace
}  // namespace dserve::kernels::cpu
