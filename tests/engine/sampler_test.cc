// Tests for SamplingParams::Validate, SequenceRng, PenaltyState and Sample. Every expected
// distribution is recomputed here independently in float64 with a full sort, and the sampler is
// checked against it both draw by draw (inverse CDF for the same u) and statistically
// (chi-square goodness of fit).
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/sampling_params.h"

namespace dserve::engine {
namespace {

constexpr int64_t kBigVocab = 129280;

// ---------------------------------------------------------------------------------------------
// Independent float64 references.

std::vector<float> RandomLogits(int vocab, uint64_t seed, double mean = 0, double stddev = 2) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(mean, stddev);
  std::vector<float> logits(vocab);
  for (float& l : logits) l = static_cast<float>(normal(gen));
  return logits;
}

// A DeepSeek-sized vocabulary whose mass sits on `hot` tokens at scattered ids.
std::vector<float> ConcentratedLogits(uint64_t seed, int hot = 40) {
  std::vector<float> logits = RandomLogits(kBigVocab, seed, -14, 1);
  std::mt19937_64 gen(seed + 1);
  std::uniform_real_distribution<double> hot_logit(2, 5);
  std::uniform_int_distribution<int64_t> id(0, kBigVocab - 1);
  for (int i = 0; i < hot; ++i) logits[id(gen)] = static_cast<float>(hot_logit(gen));
  return logits;
}

std::vector<double> RefLogSoftmax(const std::vector<float>& logits) {
  double max = -INFINITY;
  for (float l : logits) max = std::max<double>(max, l);
  double sum = 0;
  for (float l : logits) sum += std::exp(l - max);
  std::vector<double> out;
  for (float l : logits) out.push_back(l - max - std::log(sum));
  return out;
}

// Token ids by descending logit, ties by ascending id.
std::vector<int> RefOrder(const std::vector<float>& logits) {
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; });
  return order;
}

struct RefDistribution {
  std::vector<int> kept;      // descending probability
  std::vector<double> probs;  // per id, 0 outside `kept`
};

// The filtered distribution, straight from the definitions: softmax(logits / T) over the whole
// vocabulary, then top_k, then top_p on the renormalised survivors, then min_p, renormalised.
RefDistribution RefFiltered(const std::vector<float>& logits, double temperature, int top_k,
                            double top_p, double min_p) {
  std::vector<int> kept = RefOrder(logits);
  const double max = logits[kept[0]];
  auto softmax = [&](const std::vector<int>& ids) {
    std::vector<double> p(ids.size());
    double sum = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      p[i] = std::exp((logits[ids[i]] - max) / temperature);
      sum += p[i];
    }
    for (double& x : p) x /= sum;
    return p;
  };
  if (top_k > 0 && top_k < static_cast<int>(kept.size())) kept.resize(top_k);
  if (top_p < 1) {
    std::vector<double> p = softmax(kept);
    double cumulative = 0;
    size_t m = 0;
    while (m < kept.size()) {
      cumulative += p[m++];
      if (cumulative >= top_p) break;
    }
    kept.resize(m);
  }
  if (min_p > 0) {
    std::vector<double> p = softmax(kept);
    std::vector<int> survivors;
    for (size_t i = 0; i < kept.size(); ++i) {
      if (p[i] >= min_p * p[0]) survivors.push_back(kept[i]);
    }
    kept = survivors;
  }
  RefDistribution ref;
  ref.kept = kept;
  ref.probs.assign(logits.size(), 0);
  std::vector<double> p = softmax(kept);
  for (size_t i = 0; i < kept.size(); ++i) ref.probs[kept[i]] = p[i];
  return ref;
}

// Inverse CDF over the kept tokens in descending order.
int RefPick(const RefDistribution& ref, double u) {
  double cumulative = 0;
  for (int id : ref.kept) {
    cumulative += ref.probs[id];
    if (cumulative > u) return id;
  }
  return ref.kept.back();
}

// The penalties, written out from their definitions (float, as logits are).
std::vector<float> RefPenalised(std::vector<float> logits, const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& generated, float repetition,
                                float presence, float frequency) {
  std::set<int32_t> seen(prompt.begin(), prompt.end());
  seen.insert(generated.begin(), generated.end());
  for (int32_t t : seen) {
    logits[t] = logits[t] > 0 ? logits[t] / repetition : logits[t] * repetition;
  }
  for (int32_t t : std::set<int32_t>(generated.begin(), generated.end())) {
    const auto count = static_cast<float>(std::count(generated.begin(), generated.end(), t));
    logits[t] -= frequency * count;
    logits[t] -= presence;
  }
  return logits;
}

// Upper quantile of chi-square with `df` degrees of freedom, by Wilson–Hilferty:
// chi2_q(df) ~= df * (1 - 2/(9 df) + z_q * sqrt(2/(9 df)))^3 — within ~1% for df >= 3 at q=0.001.
double ChiSquareCritical(int df, double z = 3.090232306167813 /* z for upper tail 0.001 */) {
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

struct ChiSquare {
  double statistic = 0;
  int df = 0;
  double critical = 0;
  int64_t outside = 0;  // draws of tokens the reference gives probability 0
};

// Cells with expected count < 5 are pooled, smallest first, until each pool reaches 5.
ChiSquare ChiSquareTest(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                        int64_t draws) {
  ChiSquare result;
  std::vector<std::pair<double, int64_t>> cells;  // (expected, observed)
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] > 0) {
      cells.push_back({probs[i] * draws, counts[i]});
    } else {
      result.outside += counts[i];
    }
  }
  std::sort(cells.begin(), cells.end());
  std::vector<std::pair<double, int64_t>> groups;
  std::pair<double, int64_t> pool{0, 0};
  for (const auto& cell : cells) {
    pool.first += cell.first;
    pool.second += cell.second;
    if (pool.first >= 5) {
      groups.push_back(pool);
      pool = {0, 0};
    }
  }
  if (pool.first > 0) {
    if (groups.empty()) {
      groups.push_back(pool);
    } else {
      groups.back().first += pool.first;
      groups.back().second += pool.second;
    }
  }
  for (const auto& [expected, observed] : groups) {
    result.statistic += (observed - expected) * (observed - expected) / expected;
  }
  result.df = static_cast<int>(groups.size()) - 1;
  result.critical = result.df > 0 ? ChiSquareCritical(result.df) : 0;
  return result;
}

std::vector<int64_t> Histogram(const std::vector<float>& logits, const SamplingParams& p,
                               int64_t draws, uint64_t seed) {
  PenaltyState none({});
  SequenceRng rng(seed);
  std::vector<int64_t> counts(logits.size());
  for (int64_t i = 0; i < draws; ++i) ++counts[Sample(logits, p, none, {}, rng).token];
  return counts;
}

SamplingParams Params(float temperature, int top_k = 0, float top_p = 1, float min_p = 0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  return p;
}

// ---------------------------------------------------------------------------------------------
// Validate

TEST(SamplingParamsTest, DefaultsAndEdgesAreValid) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate(kBigVocab).ok());
  p.temperature = 0;
  p.top_k = -1;
  p.top_p = 1;
  p.min_p = 1;
  p.presence_penalty = -2;
  p.frequency_penalty = 2;
  p.repetition_penalty = 2;
  p.logprobs = 20;
  p.stop_token_ids = {0, kBigVocab - 1};
  p.stop = {"\n\n"};
  p.max_tokens = 1;
  p.min_tokens = 1;
  p.n = 128;
  EXPECT_TRUE(p.Validate(kBigVocab).ok()) << p.Validate(kBigVocab);
  p.logprobs = 0;
  p.top_k = 0;
  EXPECT_TRUE(p.Validate(kBigVocab).ok());
}

TEST(SamplingParamsTest, EachBadFieldIsNamedWithItsRange) {
  struct Case {
    void (*mutate)(SamplingParams&);
    std::string expected;
  };
  const Case cases[] = {
      {[](SamplingParams& p) { p.temperature = -0.5f; },
       "temperature must be in [0, inf), got -0.5"},
      {[](SamplingParams& p) { p.temperature = NAN; }, "temperature must be in [0, inf)"},
      {[](SamplingParams& p) { p.temperature = INFINITY; }, "temperature must be in [0, inf)"},
      {[](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5"},
      {[](SamplingParams& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0"},
      {[](SamplingParams& p) { p.min_p = -0.25f; }, "min_p must be in [0, 1], got -0.25"},
      {[](SamplingParams& p) { p.min_p = 1.5f; }, "min_p must be in [0, 1], got 1.5"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty must be in [-2, 2]"},
      {[](SamplingParams& p) { p.frequency_penalty = -3; }, "frequency_penalty must be in [-2, 2]"},
      {[](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty must be in (0, 2]"},
      {[](SamplingParams& p) { p.repetition_penalty = 2.5f; },
       "repetition_penalty must be in (0, 2]"},
      {[](SamplingParams& p) { p.logprobs = 21; }, "logprobs must be in [0, 20], got 21"},
      {[](SamplingParams& p) { p.logprobs = -1; }, "logprobs must be in [0, 20], got -1"},
      {[](SamplingParams& p) {
         p.stop_token_ids = {5, 1000};
       },
       "stop_token_ids must be in [0, 1000), got 1000"},
      {[](SamplingParams& p) { p.stop_token_ids = {-1}; },
       "stop_token_ids must be in [0, 1000), got -1"},
      {[](SamplingParams& p) {
         p.stop = {"a", ""};
       },
       "stop strings must be non-empty"},
      {[](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens must be >= 1, got 0"},
      {[](SamplingParams& p) { p.min_tokens = 17; },
       "min_tokens must be in [0, max_tokens=16], got 17"},
      {[](SamplingParams& p) { p.min_tokens = -1; },
       "min_tokens must be in [0, max_tokens=16], got -1"},
      {[](SamplingParams& p) { p.n = 0; }, "n must be in [1, 128], got 0"},
      {[](SamplingParams& p) { p.n = 129; }, "n must be in [1, 128], got 129"},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const absl::Status status = p.Validate(1000);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_NE(std::string(status.message()).find(c.expected), std::string::npos)
        << status.message();
  }
}

TEST(SamplingParamsTest, ReportsEveryProblemInOneMessage) {
  SamplingParams p;
  p.top_p = 2;
  p.n = 0;
  p.logprobs = 99;
  const std::string message(p.Validate(10).message());
  EXPECT_NE(message.find("top_p"), std::string::npos) << message;
  EXPECT_NE(message.find("n must be"), std::string::npos) << message;
  EXPECT_NE(message.find("logprobs"), std::string::npos) << message;
}

// ---------------------------------------------------------------------------------------------
// SequenceRng

TEST(SequenceRngTest, SameSeedSameStreamAndCounter) {
  SequenceRng a(42), b(42);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a.Uniform(), b.Uniform()) << i;
  EXPECT_EQ(a.draws(), 1000u);
  EXPECT_EQ(SequenceRng(7).draws(), 0u);
}

TEST(SequenceRngTest, DifferentSeedsShareNoValues) {
  // Nearby seeds, including ones a plain Weyl sequence would make shifted copies of each other.
  std::set<double> seen;
  for (uint64_t seed : {0ull, 1ull, 2ull, 0x9e3779b97f4a7c15ull, ~0ull}) {
    SequenceRng rng(seed);
    for (int i = 0; i < 2000; ++i) seen.insert(rng.Uniform());
  }
  EXPECT_EQ(seen.size(), 5u * 2000u);
}

TEST(SequenceRngTest, UniformInUnitIntervalWithRightMoments) {
  SequenceRng rng(123);
  constexpr int kDraws = 200000;
  double sum = 0, sum_sq = 0;
  std::vector<int> buckets(10);
  for (int i = 0; i < kDraws; ++i) {
    const double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum_sq += u * u;
    ++buckets[static_cast<int>(u * 10)];
  }
  EXPECT_NEAR(sum / kDraws, 0.5, 0.003);
  EXPECT_NEAR(sum_sq / kDraws, 1.0 / 3.0, 0.003);
  for (int b : buckets) EXPECT_NEAR(b, kDraws / 10, 600);
  EXPECT_EQ(rng.draws(), static_cast<uint64_t>(kDraws));
}

// ---------------------------------------------------------------------------------------------
// Greedy and penalties

int GreedyToken(const std::vector<float>& logits, const SamplingParams& p,
                const PenaltyState& penalties, std::vector<int32_t> banned = {}) {
  SequenceRng rng(0);
  const int token = Sample(logits, p, penalties, banned, rng).token;
  EXPECT_EQ(rng.draws(), 0u) << "greedy must not consume randomness";
  return token;
}

TEST(SamplerGreedyTest, ArgmaxWithTiesToLowestId) {
  PenaltyState none({});
  SamplingParams p = Params(0);
  EXPECT_EQ(GreedyToken({1, 5, 5, 2}, p, none), 1);
  EXPECT_EQ(GreedyToken({7, 5, 7, 2}, p, none), 0);
  EXPECT_EQ(GreedyToken({-3, -1, -2}, p, none), 1);
  // Filters never remove the argmax, so they do not change greedy.
  p.top_k = 1;
  p.top_p = 0.01f;
  p.min_p = 0.9f;
  EXPECT_EQ(GreedyToken({1, 5, 9, 2}, p, none), 2);
  const std::vector<float> big = ConcentratedLogits(3);
  EXPECT_EQ(GreedyToken(big, Params(0), none),
            std::max_element(big.begin(), big.end()) - big.begin());
}

TEST(SamplerGreedyTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p = Params(0);
  p.repetition_penalty = 2;
  // 2.0 / 2 = 1.0 < 1.5.
  EXPECT_EQ(GreedyToken({2.0f, 1.5f, -1}, p, PenaltyState(std::vector<int32_t>{0})), 1);
  // -1.0 * 2 = -2.0 < -1.5.
  EXPECT_EQ(GreedyToken({-1.0f, -1.5f}, p, PenaltyState(std::vector<int32_t>{0})), 1);
  // Applies to generated tokens too.
  PenaltyState generated({});
  generated.Add(0);
  EXPECT_EQ(GreedyToken({2.0f, 1.5f}, p, generated), 1);
  // < 1 rewards repetition: 1.0 / 0.5 = 2.0 > 1.5; -2 * 0.5 = -1 > -1.5.
  p.repetition_penalty = 0.5f;
  EXPECT_EQ(GreedyToken({1.0f, 1.5f}, p, PenaltyState(std::vector<int32_t>{0})), 0);
  EXPECT_EQ(GreedyToken({1.0f, -2.0f, -1.5f}, p, PenaltyState(std::vector<int32_t>{1})), 0);
  EXPECT_EQ(GreedyToken({-3.0f, -2.0f, -1.5f}, p, PenaltyState(std::vector<int32_t>{1})), 1);
}

TEST(SamplerGreedyTest, PresencePenaltyCountsOnceAndOnlyGenerated) {
  SamplingParams p = Params(0);
  PenaltyState state(std::vector<int32_t>{1});
  state.Add(0);
  state.Add(0);
  p.presence_penalty = 0.6f;  // 3.0 - 0.6 = 2.4 < 2.5, however often 0 was generated
  EXPECT_EQ(GreedyToken({3.0f, 2.5f}, p, state), 1);
  p.presence_penalty = 0.4f;  // 2.6 > 2.5: a frequency-like (x2) penalty would give 2.2
  EXPECT_EQ(GreedyToken({3.0f, 2.5f}, p, state), 0);
  p.presence_penalty = -1;  // prompt token 1 is not penalised (nor rewarded)
  EXPECT_EQ(GreedyToken({1.0f, 1.5f}, p, state), 0);
}

TEST(SamplerGreedyTest, FrequencyPenaltyScalesWithCount) {
  SamplingParams p = Params(0);
  p.frequency_penalty = 0.2f;
  PenaltyState state(std::vector<int32_t>{0});  // prompt occurrences do not count
  EXPECT_EQ(GreedyToken({3.0f, 2.5f}, p, state), 0);
  state.Add(0);
  state.Add(0);
  EXPECT_EQ(GreedyToken({3.0f, 2.5f}, p, state), 0);  // 3 - 0.4 = 2.6
  state.Add(0);
  EXPECT_EQ(GreedyToken({3.0f, 2.5f}, p, state), 1);  // 3 - 0.6 = 2.4
  EXPECT_EQ(state.Count(0), 3);
  EXPECT_EQ(state.num_generated(), 3);
  EXPECT_TRUE(state.InPrompt(0));
  EXPECT_FALSE(state.InPrompt(1));
}

TEST(SamplerGreedyTest, RepetitionAppliesBeforePresence) {
  SamplingParams p = Params(0);
  p.repetition_penalty = 2;
  p.presence_penalty = 0.2f;
  PenaltyState state({});
  state.Add(0);
  // 4 / 2 - 0.2 = 1.8 < 1.85; the other order would give (4 - 0.2) / 2 = 1.9 > 1.85.
  EXPECT_EQ(GreedyToken({4.0f, 1.85f}, p, state), 1);
}

TEST(SamplerTest, BannedIdsAreNeverSampled) {
  const std::vector<float> logits = RandomLogits(50, 11);
  const std::vector<int> order = RefOrder(logits);
  const std::vector<int32_t> banned = {order[0], order[1], order[2], order[0]};
  PenaltyState state({});
  EXPECT_EQ(GreedyToken(logits, Params(0), state, banned), order[3]);
  // A banned token that is also penalised stays banned.
  state.Add(order[0]);
  SamplingParams rewarding = Params(0);
  rewarding.presence_penalty = -2;
  rewarding.repetition_penalty = 0.5f;
  EXPECT_EQ(GreedyToken(logits, rewarding, state, banned), order[3]);

  SequenceRng rng(5);
  for (const SamplingParams& p :
       {Params(1.0f), Params(2.0f, 1), Params(1.0f, 0, 0.5f), Params(1.5f, 0, 1, 0.2f)}) {
    for (int i = 0; i < 5000; ++i) {
      const int token = Sample(logits, p, state, banned, rng).token;
      ASSERT_TRUE(token != order[0] && token != order[1] && token != order[2]) << token;
    }
  }
  // -inf from the model is never drawn either.
  std::vector<float> masked = logits;
  masked[order[3]] = -INFINITY;
  for (int i = 0; i < 5000; ++i) {
    ASSERT_NE(Sample(masked, Params(1.0f), state, banned, rng).token, order[3]);
  }
}

TEST(SamplerDeathTest, EverythingBannedIsAProgrammerError) {
  PenaltyState none({});
  SequenceRng rng(1);
  const std::vector<float> logits = {1, 2};
  const std::vector<int32_t> all = {0, 1};
  EXPECT_DEATH(Sample(logits, Params(1), none, all, rng), "no token can be sampled");
}

// ---------------------------------------------------------------------------------------------
// Logprobs

TEST(SamplerLogprobsTest, RawLogSoftmaxOfChosenAndTopK) {
  const std::vector<float> logits = RandomLogits(1000, 21, 0, 3);
  const std::vector<double> ref = RefLogSoftmax(logits);
  const std::vector<int> order = RefOrder(logits);
  PenaltyState state(std::vector<int32_t>{order[0], order[5]});
  state.Add(order[1]);
  SamplingParams p = Params(0.6f, 40, 0.9f);
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 1;
  p.logprobs = 5;
  const std::vector<int32_t> banned = {order[2]};
  SequenceRng rng(9);
  for (int i = 0; i < 50; ++i) {
    const SampledToken t = Sample(logits, p, state, banned, rng);
    // Of the unmodified distribution, whatever penalties, bans and temperature did.
    EXPECT_NEAR(t.logprob, ref[t.token], 1e-5);
    ASSERT_EQ(t.top.size(), 5u);
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(t.top[k].token, order[k]);
      EXPECT_NEAR(t.top[k].logprob, ref[order[k]], 1e-5);
    }
  }
  p = Params(0);
  p.logprobs = 0;
  const SampledToken greedy = Sample(logits, p, state, {}, rng);
  EXPECT_EQ(greedy.token, order[0]);
  EXPECT_NEAR(greedy.logprob, ref[order[0]], 1e-5);
  EXPECT_TRUE(greedy.top.empty());
  p.logprobs.reset();
  const SampledToken none = Sample(logits, p, state, {}, rng);
  EXPECT_EQ(none.logprob, 0);
  EXPECT_TRUE(none.top.empty());
}

TEST(SamplerLogprobsTest, TiesListLowerIdFirstAndKIsCappedByVocab) {
  const std::vector<float> logits = {1, 3, 3, 2, 3, -INFINITY};
  const std::vector<double> ref = RefLogSoftmax(logits);
  SamplingParams p = Params(0);
  p.logprobs = 4;
  PenaltyState none({});
  SequenceRng rng(1);
  SampledToken t = Sample(logits, p, none, {}, rng);
  EXPECT_EQ(t.token, 1);
  ASSERT_EQ(t.top.size(), 4u);
  const int expected[] = {1, 2, 4, 3};
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(t.top[k].token, expected[k]);
    EXPECT_NEAR(t.top[k].logprob, ref[expected[k]], 1e-6);
  }
  p.logprobs = 20;
  t = Sample(logits, p, none, {}, rng);
  ASSERT_EQ(t.top.size(), 6u);
  EXPECT_EQ(t.top[4].token, 0);
  EXPECT_EQ(t.top[5].token, 5);
  EXPECT_EQ(t.top[5].logprob, -INFINITY);
}

// ---------------------------------------------------------------------------------------------
// Reproducibility

// Logits that change every step, as a model's would.
std::vector<float> StepLogits(int sequence, int step) {
  return RandomLogits(300, 1000 * sequence + step, 0, 2.5);
}

struct Sequence {
  explicit Sequence(int id, uint64_t seed)
      : id(id), rng(seed), penalties(std::vector<int32_t>{1, 2, 3}) {}
  int id;
  SequenceRng rng;
  PenaltyState penalties;
  std::vector<int32_t> tokens;
};

void Step(Sequence& s, const SamplingParams& p) {
  const std::vector<float> logits = StepLogits(s.id, static_cast<int>(s.tokens.size()));
  const int32_t token = Sample(logits, p, s.penalties, {}, s.rng).token;
  s.penalties.Add(token);
  s.tokens.push_back(token);
}

TEST(SamplerReproducibilityTest, SameSeedSameTokensWhateverRunsAlongside) {
  SamplingParams p = Params(0.9f, 0, 0.95f);
  p.frequency_penalty = 0.3f;
  constexpr int kSteps = 200;
  auto alone = [&](int id, uint64_t seed) {
    Sequence s(id, seed);
    for (int i = 0; i < kSteps; ++i) Step(s, p);
    return s.tokens;
  };
  const std::vector<int32_t> a = alone(1, 77), b = alone(2, 78);
  EXPECT_EQ(alone(1, 77), a);
  EXPECT_NE(a, b);

  // Interleaved both ways, with an unrelated greedy sequence in between.
  for (bool a_first : {true, false}) {
    Sequence sa(1, 77), sb(2, 78), other(3, 5);
    for (int i = 0; i < kSteps; ++i) {
      Step(a_first ? sa : sb, p);
      Step(other, Params(0));
      Step(a_first ? sb : sa, p);
    }
    EXPECT_EQ(sa.tokens, a);
    EXPECT_EQ(sb.tokens, b);
  }

  // On other threads (separate scratch), concurrently.
  std::vector<int32_t> ta, tb;
  std::thread t1([&] { ta = alone(1, 77); });
  std::thread t2([&] { tb = alone(2, 78); });
  t1.join();
  t2.join();
  EXPECT_EQ(ta, a);
  EXPECT_EQ(tb, b);
}

TEST(SamplerReproducibilityTest, OneDrawPerSampledToken) {
  const std::vector<float> logits = RandomLogits(50, 3);
  PenaltyState none({});
  SequenceRng rng(1);
  Sample(logits, Params(1), none, {}, rng);
  Sample(logits, Params(1, 1), none, {}, rng);  // even when only one token survives
  EXPECT_EQ(rng.draws(), 2u);
}

// ---------------------------------------------------------------------------------------------
// The exact token for each u: inverse CDF over the reference distribution in descending order.

void ExpectInverseCdf(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  const RefDistribution ref = RefFiltered(logits, p.temperature, p.top_k, p.top_p, p.min_p);
  PenaltyState none({});
  SequenceRng rng(2024);
  int mismatches = 0;
  for (int i = 0; i < draws; ++i) {
    SequenceRng peek = rng;
    const int expected = RefPick(ref, peek.Uniform());
    mismatches += Sample(logits, p, none, {}, rng).token != expected;
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(SamplerInverseCdfTest, EachDrawMatchesTheReferencePick) {
  const std::vector<float> small = RandomLogits(50, 31);
  const std::vector<float> big = ConcentratedLogits(32);
  // Flat over 3000 ids, so the walk runs past the first sorted chunk (1024) most of the time.
  const std::vector<float> flat = RandomLogits(3000, 33, 0, 0.5);
  for (const SamplingParams& p :
       {Params(0.7f), Params(0.7f, 5), Params(0.7f, 0, 0.8f), Params(0.7f, 0, 1, 0.1f),
        Params(0.7f, 10, 0.9f, 0.05f), Params(0.7f, 0, 0.9f, 0.1f), Params(0.7f, 8, 1, 0.2f),
        Params(1.3f, 3000), Params(1e-3f)}) {
    SCOPED_TRACE(testing::Message() << "T=" << p.temperature << " top_k=" << p.top_k
                                    << " top_p=" << p.top_p << " min_p=" << p.min_p);
    ExpectInverseCdf(small, p, 20000);
    ExpectInverseCdf(big, p, 200);
    ExpectInverseCdf(flat, p, 200);
  }
  ExpectInverseCdf(flat, Params(1, 0, 0.95f), 100);
  ExpectInverseCdf(flat, Params(1, 0, 1, 0.3f), 100);
}

TEST(SamplerInverseCdfTest, TopPAlwaysKeepsOneAndMinPOneKeepsTheMaxima) {
  const std::vector<float> logits = {1, 4, 2, 4, 0};
  PenaltyState none({});
  SequenceRng rng(8);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(Sample(logits, Params(1, 0, 1e-6f), none, {}, rng).token, 1);
    const int token = Sample(logits, Params(1, 0, 1, 1), none, {}, rng).token;
    EXPECT_TRUE(token == 1 || token == 3) << token;
    const int top_k_2 = Sample(logits, Params(5, 2), none, {}, rng).token;
    EXPECT_TRUE(top_k_2 == 1 || top_k_2 == 3) << top_k_2;
  }
}

// ---------------------------------------------------------------------------------------------
// Chi-square goodness of fit against the float64 reference, at p = 0.001.

struct FitCase {
  const char* name;
  SamplingParams params;
};

ChiSquare Fit(const std::vector<float>& logits, const SamplingParams& p, int64_t draws,
              const std::vector<double>& ref_probs, uint64_t seed) {
  const std::vector<int64_t> counts = Histogram(logits, p, draws, seed);
  return ChiSquareTest(counts, ref_probs, draws);
}

// `draws_for_full_pass` for the cases whose every draw needs the exp() pass over the whole
// vocabulary (plain temperature, top_p alone), `draws` for the others.
void ExpectFits(const std::vector<float>& logits, int64_t draws, int64_t draws_for_full_pass) {
  const FitCase cases[] = {
      {"temperature 0.7", Params(0.7f)},
      {"top_k=5", Params(0.7f, 5)},
      {"top_p=0.8", Params(0.7f, 0, 0.8f)},
      {"min_p=0.1", Params(0.7f, 0, 1, 0.1f)},
      {"top_k=10 top_p=0.9 min_p=0.05", Params(0.7f, 10, 0.9f, 0.05f)},
  };
  for (const FitCase& c : cases) {
    const SamplingParams& p = c.params;
    const RefDistribution ref = RefFiltered(logits, p.temperature, p.top_k, p.top_p, p.min_p);
    const int64_t n = p.top_k > 0 || p.min_p > 0 ? draws : draws_for_full_pass;
    const ChiSquare fit = Fit(logits, p, n, ref.probs, 99);
    std::printf("  vocab %zu, %-30s N %6lld, kept %6zu: chi2 = %6.2f, df = %2d, critical = %6.2f\n",
                logits.size(), c.name, static_cast<long long>(n), ref.kept.size(), fit.statistic,
                fit.df, fit.critical);
    EXPECT_EQ(fit.outside, 0) << c.name;
    EXPECT_GT(fit.df, 0) << c.name;
    EXPECT_LT(fit.statistic, fit.critical) << c.name;
  }
}

TEST(SamplerChiSquareTest, SmallVocabularyMatchesReference) {
  ExpectFits(RandomLogits(50, 7), 200000, 200000);
}

TEST(SamplerChiSquareTest, DeepSeekVocabularyMatchesReference) {
  // Each draw here reads all 129,280 logits (and the full-pass cases take an exp() of each), so
  // fewer draws keep the suite fast; the hot tokens still get tens to hundreds each.
  ExpectFits(ConcentratedLogits(8), 5000, 1500);
}

TEST(SamplerChiSquareTest, PenalisedDistributionMatchesReference) {
  const std::vector<float> logits = RandomLogits(50, 12);
  const std::vector<int32_t> prompt = {3, 7, 7, 19, 40};
  const std::vector<int32_t> generated = {7, 8, 8, 8, 19, 33};
  PenaltyState state(prompt);
  for (int32_t t : generated) state.Add(t);
  SamplingParams p = Params(0.9f, 20);
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.3f;
  const std::vector<int32_t> banned = {RefOrder(logits)[0]};
  std::vector<float> expected_logits = RefPenalised(logits, prompt, generated, 1.3f, 0.5f, 0.3f);
  expected_logits[banned[0]] = -INFINITY;
  const RefDistribution ref = RefFiltered(expected_logits, 0.9, 20, 1, 0);

  constexpr int64_t kDraws = 200000;
  SequenceRng rng(4);
  std::vector<int64_t> counts(logits.size());
  for (int64_t i = 0; i < kDraws; ++i) ++counts[Sample(logits, p, state, banned, rng).token];
  const ChiSquare fit = ChiSquareTest(counts, ref.probs, kDraws);
  std::printf(
      "  vocab 50, penalties+ban+top_k=20 T=0.9: chi2 = %8.2f, df = %3d, critical = %7.2f\n",
      fit.statistic, fit.df, fit.critical);
  EXPECT_EQ(fit.outside, 0);
  EXPECT_LT(fit.statistic, fit.critical);
}

TEST(SamplerChiSquareTest, RejectsAWrongDistribution) {
  // The test must be able to fail: draws at temperature 1.0 judged against the 0.7 reference.
  const std::vector<float> logits = RandomLogits(50, 7);
  const RefDistribution at_07 = RefFiltered(logits, 0.7, 0, 1, 0);
  const ChiSquare fit = Fit(logits, Params(1.0f), 200000, at_07.probs, 99);
  std::printf("  T=1.0 draws vs T=0.7 reference: chi2 = %.1f, df = %d, critical = %.2f\n",
              fit.statistic, fit.df, fit.critical);
  EXPECT_GT(fit.statistic, fit.critical);
  // And a set-level failure is caught too: top_k=6 draws against the top_k=5 reference.
  const RefDistribution top5 = RefFiltered(logits, 0.7, 5, 1, 0);
  EXPECT_GT(Fit(logits, Params(0.7f, 6), 20000, top5.probs, 3).outside, 0);
}

TEST(SamplerChiSquareTest, WilsonHilfertyIsCloseToTabulatedQuantiles) {
  // Tabulated chi-square upper 0.001 quantiles; Wilson–Hilferty errs high (conservative) by
  // 1.4% at df = 4 and by less as df grows.
  EXPECT_NEAR(ChiSquareCritical(4), 18.467, 0.015 * 18.467);
  EXPECT_NEAR(ChiSquareCritical(10), 29.588, 0.01 * 29.588);
  EXPECT_NEAR(ChiSquareCritical(20), 45.315, 0.005 * 45.315);
  EXPECT_NEAR(ChiSquareCritical(50), 86.661, 0.005 * 86.661);
}

}  // namespace
}  // namespace dserve::engine
