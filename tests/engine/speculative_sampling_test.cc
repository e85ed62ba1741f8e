// Speculative decoding must leave the output distribution of sampling exactly that of the main
// model. On micro-v3 (vocabulary 2048) thousands of sampled continuations with MTP drafts are
// compared with thousands without (independent seeds) by a chi-square test of homogeneity over
// whole continuations; the same test must tell a slightly hotter sampler apart, so it has the
// power to catch a biased one.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "engine/engine_core.h"
#include "tests/engine/engine_test_support.h"
#include "tests/support/chi_square.h"

namespace dserve::engine::testing {
namespace {

using dserve::testing::ChiSquare;
using dserve::testing::RegularizedUpperGamma;
using dserve::testing::TwoSampleChiSquare;

constexpr int kSamples = 4000;
constexpr int kNewTokens = 4;

std::vector<int32_t> Prompt() {
  std::mt19937 rng(11);
  return RandomPrompt(rng, 12);
}

// kSamples continuations of Prompt() at this temperature, one request each, seeds from
// first_seed on.
std::vector<Request> Requests(float temperature, uint64_t first_seed) {
  std::vector<Request> requests;
  for (int i = 0; i < kSamples; ++i) {
    Request r;
    r.prompt = Prompt();
    r.params.temperature = temperature;
    r.params.top_k = 0;
    r.params.seed = first_seed + i;
    r.params.max_tokens = kNewTokens;
    r.params.ignore_eos = true;
    r.detokenize = false;
    requests.push_back(r);
  }
  return requests;
}

EngineConfig BatchConfig() {
  EngineConfig c = SmallConfig();
  c.num_pages = 2048;
  c.scheduler.max_batched_tokens = 512;
  c.scheduler.max_num_seqs = 128;
  return c;
}

std::map<std::vector<int32_t>, int64_t> Continuations(const std::vector<Result>& results) {
  std::map<std::vector<int32_t>, int64_t> counts;
  for (const Result& r : results) ++counts[r.tokens.at(0)];
  return counts;
}

// The most frequent token at each generated position: drafts that are right often enough (for
// a peaked distribution) to exercise acceptance as well as rejection at every position.
std::vector<int32_t> ModalTokens(const std::vector<Result>& results) {
  std::vector<std::map<int32_t, int>> counts(kNewTokens);
  for (const Result& r : results) {
    const std::vector<int32_t>& t = r.tokens.at(0);
    for (size_t g = 0; g < t.size(); ++g) ++counts[g][t[g]];
  }
  std::vector<int32_t> modal;
  for (const auto& c : counts) {
    auto best = c.begin();
    for (auto it = c.begin(); it != c.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    modal.push_back(best->first);
  }
  return modal;
}

TEST(ChiSquareTest, SurvivalFunctionMatchesTables) {
  // chi-square critical values at p = 0.05 and 0.001 (standard tables).
  EXPECT_NEAR(RegularizedUpperGamma(0.5, 3.841459 / 2), 0.05, 1e-6);
  EXPECT_NEAR(RegularizedUpperGamma(5.0, 18.307038 / 2), 0.05, 1e-6);
  EXPECT_NEAR(RegularizedUpperGamma(50.0, 149.448710 / 2), 0.001, 1e-6);
  EXPECT_DOUBLE_EQ(RegularizedUpperGamma(3.0, 0.0), 1.0);
  // Two identical samples: statistic 0, p = 1.
  const std::map<int, int64_t> same = {{1, 50}, {2, 70}, {3, 30}};
  const ChiSquare c = TwoSampleChiSquare(same, same);
  EXPECT_EQ(c.statistic, 0.0);
  EXPECT_EQ(c.degrees_of_freedom, 2);
  EXPECT_DOUBLE_EQ(c.p_value, 1.0);
}

TEST(SpeculativeSamplingTest, DistributionWithDraftsEqualsDistributionWithout) {
  const float temperature = 0.5f;  // peaked enough that modal drafts are often accepted
  const std::vector<Result> plain = RunAll(BatchConfig(), Requests(temperature, 1));
  const std::vector<int32_t> modal = ModalTokens(plain);

  EngineConfig spec = BatchConfig();
  spec.num_speculative_tokens = 2;
  spec.draft_override_for_testing = [&](const Sequence& seq) -> std::optional<int32_t> {
    const int64_t g = seq.generated() + seq.num_drafts;
    return g < kNewTokens ? std::optional<int32_t>(modal[g]) : std::nullopt;
  };
  EngineStats stats;
  const std::vector<Result> drafted =
      RunAll(spec, Requests(temperature, 1000000), 0, nullptr, nullptr, nullptr, &stats);
  // Both paths ran many times at both draft positions.
  for (int j = 0; j < 2; ++j) {
    EXPECT_GT(stats.accepted_at[j], kSamples / 10) << "position " << j;
    EXPECT_GT(stats.drafts_at[j] - stats.accepted_at[j], kSamples / 10) << "position " << j;
  }
  const ChiSquare same = TwoSampleChiSquare(Continuations(plain), Continuations(drafted));
  std::printf("with vs without drafts: chi-square %.1f, %d degrees of freedom, p = %.3f "
              "(%lld of %lld drafts accepted)\n",
              same.statistic, same.degrees_of_freedom, same.p_value,
              static_cast<long long>(stats.accepted_draft_tokens),
              static_cast<long long>(stats.draft_tokens));
  EXPECT_GE(same.degrees_of_freedom, 20);
  EXPECT_GT(same.p_value, 0.001);

  // Power: the same test rejects a sampler whose temperature is 10% off.
  const std::vector<Result> hotter = RunAll(BatchConfig(), Requests(temperature * 1.1f, 2000000));
  const ChiSquare biased = TwoSampleChiSquare(Continuations(plain), Continuations(hotter));
  std::printf("temperature %.2f vs %.2f: chi-square %.1f, %d degrees of freedom, p = %.2g\n",
              temperature, temperature * 1.1f, biased.statistic, biased.degrees_of_freedom,
              biased.p_value);
  EXPECT_LT(biased.p_value, 0.001);
}

}  // namespace
}  // namespace dserve::engine::testing
