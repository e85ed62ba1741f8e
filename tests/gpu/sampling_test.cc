// The GPU sampler against the CPU Sampler: on random rows (DeepSeek-V3's vocabulary and a small
// one full of ties, -inf and NaN entries, ties at the top) under greedy, temperature, top-k,
// top-p, min-p and their mixes, the device picks engine::Sample()'s token when given the uniform
// the row's SequenceRng draws next; hand-worked rows pin the tie, -0, NaN and +inf rules; and
// 20,000 device draws of one row fit a long-double reference distribution computed here from the
// rule's definition (chi-square), while rejecting a nearby wrong one. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/check.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/sampling.h"
#include "tests/support/chi_square.h"

namespace dserve::kernels::cuda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Knobs {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
};

SamplingRow Row(const Knobs& k, double uniform) {
  SamplingRow row;
  row.temperature = k.temperature;
  row.top_k = k.top_k;
  row.top_p = k.top_p;
  row.min_p = k.min_p;
  row.uniform = uniform;
  return row;
}

// Runs LaunchSampling over host rows ([rows.size(), vocab] logits). The workspace is poisoned
// with NaN keys and the tokens with a value no row can produce, so stale or unwritten memory
// shows.
absl::StatusOr<std::vector<int32_t>> SampleOnDevice(const std::vector<float>& logits, int64_t vocab,
                                                    const std::vector<SamplingRow>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const size_t workspace_bytes = SamplingWorkspaceBytes(n, vocab);
  absl::StatusOr<std::shared_ptr<Buffer>> d_logits = AllocateDevice(logits.size() * sizeof(float));
  absl::StatusOr<std::shared_ptr<Buffer>> d_rows =
      AllocateDevice(rows.size() * sizeof(SamplingRow));
  absl::StatusOr<std::shared_ptr<Buffer>> d_tokens = AllocateDevice(rows.size() * sizeof(int32_t));
  absl::StatusOr<std::shared_ptr<Buffer>> d_workspace = AllocateDevice(workspace_bytes);
  for (const auto* b : {&d_logits, &d_rows, &d_tokens, &d_workspace}) {
    if (!b->ok()) return b->status();
  }
  DSERVE_RETURN_IF_ERROR(
      CopyToDevice((*d_logits)->data(), logits.data(), logits.size() * sizeof(float)));
  DSERVE_RETURN_IF_ERROR(
      CopyToDevice((*d_rows)->data(), rows.data(), rows.size() * sizeof(SamplingRow)));
  DSERVE_RETURN_IF_ERROR(FillDevice((*d_workspace)->data(), 0xFF, workspace_bytes));
  DSERVE_RETURN_IF_ERROR(FillDevice((*d_tokens)->data(), 0x7F, rows.size() * sizeof(int32_t)));

  SamplingParams p;
  p.logits = static_cast<const float*>((*d_logits)->data());
  p.rows = n;
  p.vocab = vocab;
  p.params = static_cast<const SamplingRow*>((*d_rows)->data());
  p.workspace = (*d_workspace)->data();
  p.workspace_bytes = workspace_bytes;
  p.tokens = static_cast<int32_t*>((*d_tokens)->data());
  if (const cudaError_t e = LaunchSampling(p, nullptr); e != cudaSuccess) {
    return absl::InternalError(std::string("LaunchSampling: ") + cudaGetErrorName(e));
  }
  DSERVE_RETURN_IF_ERROR(Synchronize());
  std::vector<int32_t> tokens(rows.size());
  DSERVE_RETURN_IF_ERROR(
      CopyToHost(tokens.data(), (*d_tokens)->data(), tokens.size() * sizeof(int32_t)));
  return tokens;
}

// Normal logits at `scale`; about 1% -inf (at least one); a NaN in every third row; `quantised`
// rounds to halves (many ties, -0 and +0 among them); `tie_at_top` makes up to four ids share
// the maximum.
void FillRandomRow(float* row, int64_t vocab, int index, float scale, bool quantised,
                   std::mt19937_64& gen) {
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < vocab; ++i) {
    float l = normal(gen);
    if (quantised) {
      l = std::round(l * 2.0f) / 2.0f;
      if (l == 0.0f && (gen() & 1)) l = -0.0f;
    }
    row[i] = l;
  }
  for (int64_t i = 0; i < vocab / 100 + 1; ++i) row[gen() % vocab] = -kInf;
  if (index % 3 == 0) row[gen() % vocab] = kNaN;
  if (index % 5 == 0) {
    float top = -kInf;
    for (int64_t i = 0; i < vocab; ++i) top = row[i] > top ? row[i] : top;
    for (int i = 0; i < 4; ++i) row[gen() % vocab] = top + 0.5f;
  }
}

// The parameter mixes, cycled over the rows (greedy rows carry filters they must ignore).
const std::vector<Knobs>& Mixes() {
  static const std::vector<Knobs> mixes = {
      {0.0f, 0, 1.0f, 0.0f},  {0.0f, 5, 0.5f, 0.2f},  {1.0f, 0, 1.0f, 0.0f},
      {0.7f, 0, 1.0f, 0.0f},  {1.5f, 0, 1.0f, 0.0f},  {1.0f, 1, 1.0f, 0.0f},
      {0.8f, 5, 1.0f, 0.0f},  {1.2f, 50, 1.0f, 0.0f}, {1.0f, 0, 0.5f, 0.0f},
      {0.9f, 0, 0.9f, 0.0f},  {1.0f, 0, 1.0f, 0.05f}, {0.6f, 0, 1.0f, 0.2f},
      {1.3f, 50, 0.9f, 0.0f}, {0.3f, 5, 0.5f, 0.05f}, {1.1f, 0, 0.9f, 0.05f},
      {0.5f, 50, 1.0f, 0.2f}, {1.5f, 50, 0.9f, 0.2f},
  };
  return mixes;
}

TEST(CudaSamplingTest, SameTokenAsTheCpuSampler) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }
  struct Shape {
    int64_t vocab;
    int rows;
    bool quantised;
  };
  const engine::PenaltyState no_penalties{std::span<const int32_t>()};
  for (const Shape& shape : {Shape{129280, 136, false}, Shape{50, 3400, true}}) {
    SCOPED_TRACE("vocab " + std::to_string(shape.vocab));
    const int64_t vocab = shape.vocab;
    std::mt19937_64 gen(static_cast<uint64_t>(vocab));
    std::vector<float> logits(static_cast<size_t>(shape.rows * vocab));
    std::vector<SamplingRow> rows;
    std::vector<int32_t> want;
    for (int r = 0; r < shape.rows; ++r) {
      float* row = logits.data() + r * vocab;
      constexpr float kScales[] = {1.0f, 2.0f, 5.0f, 10.0f};
      FillRandomRow(row, vocab, r, kScales[r % 4], shape.quantised, gen);
      const Knobs& k = Mixes()[r % Mixes().size()];
      engine::SamplingParams sp;
      sp.temperature = k.temperature;
      sp.top_k = k.top_k;
      sp.top_p = k.top_p;
      sp.min_p = k.min_p;
      engine::SequenceRng rng(gen());
      for (int skip = static_cast<int>(gen() % 3); skip > 0; --skip) rng.Uniform();
      engine::SequenceRng next = rng;  // the draw Sample() is about to make
      rows.push_back(Row(k, next.Uniform()));
      want.push_back(engine::Sample(std::span<const float>(row, static_cast<size_t>(vocab)), sp,
                                    no_penalties, {}, rng)
                         .token);
    }
    absl::StatusOr<std::vector<int32_t>> got = SampleOnDevice(logits, vocab, rows);
    ASSERT_TRUE(got.ok()) << got.status();
    int mismatches = 0;
    for (int r = 0; r < shape.rows; ++r) {
      if ((*got)[r] == want[r]) continue;
      if (++mismatches <= 10) {
        const SamplingRow& p = rows[r];
        ADD_FAILURE() << "row " << r << " (T " << p.temperature << ", top_k " << p.top_k
                      << ", top_p " << p.top_p << ", min_p " << p.min_p << ", u " << p.uniform
                      << "): device " << (*got)[r] << ", CPU " << want[r];
      }
    }
    EXPECT_EQ(mismatches, 0) << "of " << shape.rows << " rows";
  }
}

struct EdgeCase {
  const char* name;
  std::vector<float> logits;
  Knobs knobs;
  double uniform;
  int32_t want;
};

// Worked by hand from the rule (ranks in descending order, ties: lower id first). Each row is
// its own launch, as the vocabularies differ.
TEST(CudaSamplingTest, HandWorkedRows) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }
  const Knobs greedy{0.0f, 0, 1.0f, 0.0f};
  const Knobs plain{1.0f, 0, 1.0f, 0.0f};
  const std::vector<EdgeCase> cases = {
      {"all -inf, greedy", {-kInf, -kInf, -kInf}, greedy, 0.5, -1},
      {"all -inf, drawn", {-kInf, -kInf, -kInf}, plain, 0.5, -1},
      {"all -inf, top_k", {-kInf, -kInf, -kInf}, {1.0f, 2, 1.0f, 0.0f}, 0.5, -1},
      {"NaN and -inf, greedy", {kNaN, -kInf, kNaN, -kInf, kNaN}, greedy, 0.5, -1},
      {"NaN and -inf, top_p", {kNaN, -kInf, kNaN, -kInf, kNaN}, {0.7f, 0, 0.9f, 0.0f}, 0.5, -1},
      {"one finite, greedy", {kNaN, -kInf, 2.5f, kNaN, -kInf}, greedy, 0.5, 2},
      {"one finite, drawn", {kNaN, -kInf, 2.5f, kNaN, -kInf}, plain, 0.999, 2},
      {"one finite, top_k", {kNaN, -kInf, 2.5f, kNaN, -kInf}, {1.0f, 1, 1.0f, 0.0f}, 0.9, 2},
      {"one finite, top_p", {kNaN, -kInf, 2.5f, kNaN, -kInf}, {1.0f, 0, 0.5f, 0.0f}, 0.9, 2},
      {"one finite, min_p", {kNaN, -kInf, 2.5f, kNaN, -kInf}, {1.0f, 0, 1.0f, 0.2f}, 0.9, 2},
      // Weights 1 (id 1) and e^-0.5 (id 3): u = 0.999999 lands on id 3, never on a NaN.
      {"NaN never chosen, greedy", {kNaN, 1.0f, kNaN, 0.5f, kNaN}, greedy, 0.5, 1},
      {"NaN never chosen, drawn", {kNaN, 1.0f, kNaN, 0.5f, kNaN}, plain, 0.999999, 3},
      {"NaN above the top, top_k 1", {kNaN, 1.0f, kNaN, 2.0f, kNaN}, {1.0f, 1, 1.0f, 0.0f}, 0.9, 3},
      // Three ids tie at the top; at T = 0.001 id 4 is negligible and each tie weighs 1.
      {"ties, greedy", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, greedy, 0.5, 1},
      {"ties, u 0", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, {0.001f, 0, 1.0f, 0.0f}, 0.0, 1},
      {"ties, u 0.5", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, {0.001f, 0, 1.0f, 0.0f}, 0.5, 2},
      {"ties, u 0.9", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, {0.001f, 0, 1.0f, 0.0f}, 0.9, 3},
      {"ties, top_k 2, u 0.3", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, {1.0f, 2, 1.0f, 0.0f}, 0.3, 1},
      {"ties, top_k 2, u 0.99", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, {1.0f, 2, 1.0f, 0.0f}, 0.99, 2},
      {"ties, top_k 1", {1.0f, 3.0f, 3.0f, 3.0f, 2.0f}, {1.0f, 1, 1.0f, 0.0f}, 0.99, 1},
      // -0 and +0 are equal: ranked by id (1, 2, 4).
      {"-0 and +0, greedy", {-kInf, -0.0f, 0.0f, -1.0f, -0.0f}, greedy, 0.5, 1},
      {"-0 and +0, top_k 1", {-kInf, -0.0f, 0.0f, -1.0f, -0.0f}, {1.0f, 1, 1.0f, 0.0f}, 0.9, 1},
      {"-0 and +0, top_k 2", {-kInf, -0.0f, 0.0f, -1.0f, -0.0f}, {1.0f, 2, 1.0f, 0.0f}, 0.6, 2},
      {"-0 and +0, top_k 3", {-kInf, -0.0f, 0.0f, -1.0f, -0.0f}, {1.0f, 3, 1.0f, 0.0f}, 0.9, 4},
      // +inf: greedy takes its lowest id; a draw has no distribution (the CPU refuses it).
      {"+inf, greedy", {1.0f, kInf, 2.0f, kInf, 0.0f}, greedy, 0.5, 1},
      {"+inf, drawn", {1.0f, kInf, 2.0f, kInf, 0.0f}, plain, 0.5, -1},
      {"temperature -1", {1.0f, 2.0f, 3.0f}, {-1.0f, 0, 1.0f, 0.0f}, 0.5, -1},
      {"temperature NaN", {1.0f, 2.0f, 3.0f}, {kNaN, 0, 1.0f, 0.0f}, 0.5, -1},
      {"temperature inf", {1.0f, 2.0f, 3.0f}, {kInf, 0, 1.0f, 0.0f}, 0.5, -1},
      {"temperature -0 is greedy", {1.0f, 2.0f, 3.0f}, {-0.0f, 0, 1.0f, 0.0f}, 0.0, 2},
      // Weights 1, e^-1, e^-2, e^-3, e^-4 for ids 4..0 (total 1.57133): u = 0.999 reaches id 0;
      // with the top 4 (total 1.55301) it stops at id 1.
      {"top_k = vocab is off", {0.0f, 1.0f, 2.0f, 3.0f, 4.0f}, {1.0f, 5, 1.0f, 0.0f}, 0.999, 0},
      {"top_k = vocab - 1", {0.0f, 1.0f, 2.0f, 3.0f, 4.0f}, {1.0f, 4, 1.0f, 0.0f}, 0.999, 1},
      // Four equal weights: top_p 0.5 keeps exactly two (the sums are exact).
      {"top_p 0.5 of four ties", {0.0f, 0.0f, 0.0f, 0.0f}, {1.0f, 0, 0.5f, 0.0f}, 0.99, 1},
      {"min_p 1 keeps only the top",
       {0.0f, 10.0f, 9.0f, -kInf, 1.0f},
       {1.0f, 0, 1.0f, 1.0f},
       0.99,
       1},
      {"vocab 1", {5.0f}, plain, 0.7, 0},
      {"vocab 1, top_p", {5.0f}, {1.0f, 0, 0.5f, 0.0f}, 0.7, 0},
      {"vocab 1, NaN", {kNaN}, plain, 0.7, -1},
  };
  for (const EdgeCase& c : cases) {
    absl::StatusOr<std::vector<int32_t>> got =
        SampleOnDevice(c.logits, static_cast<int64_t>(c.logits.size()), {Row(c.knobs, c.uniform)});
    ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
    EXPECT_EQ((*got)[0], c.want) << c.name;
  }
}

// The kept set's probabilities from the definition, in long double: descending order with ties
// to the lower id, the top k, the shortest prefix reaching top_p of the top-k mass, then
// p >= min_p * p_max. Independent of both samplers' code (no negligible cut: it changes nothing
// at this precision).
std::vector<double> ReferenceProbabilities(const std::vector<float>& logits, const Knobs& k) {
  const int vocab = static_cast<int>(logits.size());
  std::vector<int> order;
  for (int i = 0; i < vocab; ++i) {
    if (std::isfinite(logits[i])) order.push_back(i);
  }
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; });
  const long double top = logits[order[0]];
  auto weight = [&](int id) { return std::exp((logits[id] - top) / k.temperature); };
  if (k.top_k > 0 && k.top_k < vocab && static_cast<size_t>(k.top_k) < order.size()) {
    order.resize(k.top_k);
  }
  if (k.top_p < 1.0f) {
    long double total = 0, cumulative = 0;
    for (int id : order) total += weight(id);
    size_t m = 0;
    while (m < order.size()) {
      cumulative += weight(order[m++]);
      if (cumulative >= static_cast<long double>(k.top_p) * total) break;
    }
    order.resize(m);
  }
  if (k.min_p > 0.0f) {
    // weight(top) is 1, so p / p_max is the weight itself.
    order.erase(std::remove_if(order.begin() + 1, order.end(),
                               [&](int id) { return weight(id) < k.min_p; }),
                order.end());
  }
  long double total = 0;
  for (int id : order) total += weight(id);
  std::vector<double> p(vocab, 0.0);
  for (int id : order) p[id] = static_cast<double>(weight(id) / total);
  return p;
}

struct Fit {
  double statistic = 0;
  int degrees_of_freedom = 0;
  double p_value = 1;
  int64_t outside = 0;  // draws of tokens the reference gives probability 0
};

// Pearson's goodness of fit of `counts` to `probs`; categories expected under 5 times are
// pooled. A draw outside the support fails outright (p = 0).
Fit GoodnessOfFit(const std::vector<int64_t>& counts, const std::vector<double>& probs) {
  const double draws = static_cast<double>(std::accumulate(counts.begin(), counts.end(), 0LL));
  Fit fit;
  std::vector<std::pair<double, double>> kept;  // (observed, expected)
  double pooled_observed = 0, pooled_expected = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double observed = static_cast<double>(counts[i]), expected = probs[i] * draws;
    if (probs[i] == 0) {
      fit.outside += counts[i];
    } else if (expected < 5) {
      pooled_observed += observed;
      pooled_expected += expected;
    } else {
      kept.emplace_back(observed, expected);
    }
  }
  if (pooled_expected >= 5 || kept.empty()) {
    kept.emplace_back(pooled_observed, pooled_expected);
  } else if (pooled_expected > 0) {
    kept.back().first += pooled_observed;
    kept.back().second += pooled_expected;
  }
  for (const auto& [observed, expected] : kept) {
    fit.statistic += (observed - expected) * (observed - expected) / expected;
  }
  fit.degrees_of_freedom = static_cast<int>(kept.size()) - 1;
  fit.p_value = fit.outside > 0 ? 0.0
                : fit.degrees_of_freedom > 0
                    ? dserve::testing::RegularizedUpperGamma(fit.degrees_of_freedom / 2.0,
                                                             fit.statistic / 2.0)
                    : 1.0;
  return fit;
}

// 20,000 device draws of one 50-token row, uniforms from mt19937_64 (53 bits, as SequenceRng's),
// must fit the reference (p >= 1e-3; the seeds are fixed, so the outcome is too) and reject
// the reference at 1.25x the temperature (p < 1e-9): the test can tell a wrong distribution.
TEST(CudaSamplingTest, DrawsFollowTheReferenceDistribution) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }
  constexpr int kVocab = 50;
  constexpr int kDraws = 20000;
  const std::vector<Knobs> cases = {
      {0.8f, 20, 0.9f, 0.02f}, {1.0f, 10, 1.0f, 0.0f}, {1.3f, 0, 1.0f, 0.0f},
      {1.0f, 0, 0.7f, 0.0f},   {1.2f, 0, 1.0f, 0.05f},
  };
  std::mt19937_64 gen(2024);
  for (size_t c = 0; c < cases.size(); ++c) {
    const Knobs& k = cases[c];
    SCOPED_TRACE("case " + std::to_string(c));
    std::normal_distribution<float> normal(0.0f, 1.5f);
    std::vector<float> row(kVocab);
    for (float& l : row) l = normal(gen);
    row[7] = row[31] = -kInf;
    row[12] = kNaN;
    // A tie straddling the top_k boundary (ranks k - 1 and k): only its lower id may be drawn.
    const int boundary = k.top_k > 0 ? k.top_k : 10;
    std::vector<int> order(kVocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      const float la = std::isnan(row[a]) ? -kInf : row[a],
                  lb = std::isnan(row[b]) ? -kInf : row[b];
      return la != lb ? la > lb : a < b;
    });
    row[order[boundary]] = row[order[boundary - 1]];

    std::vector<float> logits;
    std::vector<SamplingRow> rows;
    for (int d = 0; d < kDraws; ++d) {
      logits.insert(logits.end(), row.begin(), row.end());
      rows.push_back(Row(k, static_cast<double>(gen() >> 11) * 0x1.0p-53));
    }
    absl::StatusOr<std::vector<int32_t>> got = SampleOnDevice(logits, kVocab, rows);
    ASSERT_TRUE(got.ok()) << got.status();
    std::vector<int64_t> counts(kVocab, 0);
    for (int32_t token : *got) {
      ASSERT_TRUE(token >= 0 && token < kVocab) << "token " << token;
      ++counts[token];
    }

    const Fit fit = GoodnessOfFit(counts, ReferenceProbabilities(row, k));
    EXPECT_EQ(fit.outside, 0) << "draws outside the kept set";
    EXPECT_GE(fit.p_value, 1e-3) << "chi-square " << fit.statistic << " on "
                                 << fit.degrees_of_freedom << " degrees of freedom";
    Knobs hotter = k;
    hotter.temperature *= 1.25f;
    const Fit wrong = GoodnessOfFit(counts, ReferenceProbabilities(row, hotter));
    EXPECT_LT(wrong.p_value, 1e-9) << "the draws also fit T x 1.25: chi-square " << wrong.statistic
                                   << " on " << wrong.degrees_of_freedom << " degrees of freedom";
  }
}

// Shape and pointer checks happen before any CUDA call, so this runs without a GPU too.
TEST(CudaSamplingTest, RefusesBadArguments) {
  EXPECT_EQ(SamplingWorkspaceBytes(0, 100), 0u);
  EXPECT_EQ(SamplingWorkspaceBytes(4, 0), 0u);
  EXPECT_EQ(SamplingWorkspaceBytes(4, int64_t{1} << 31), 0u);  // beyond CUB's int item count
  EXPECT_GE(SamplingWorkspaceBytes(4, 129280), 16u * 4 * 129280);
  // Large batches are sorted in passes: the workspace stops growing.
  EXPECT_LE(SamplingWorkspaceBytes(4096, 129280), size_t{520} << 20);

  // Never dereferenced: every call below is refused before it reaches the device.
  alignas(256) static char dummy[256];
  SamplingParams p;
  p.logits = reinterpret_cast<const float*>(dummy);
  p.rows = 4;
  p.vocab = 129280;
  p.params = reinterpret_cast<const SamplingRow*>(dummy);
  p.workspace = dummy;
  p.workspace_bytes = SamplingWorkspaceBytes(4, 129280);
  p.tokens = reinterpret_cast<int32_t*>(dummy);

  SamplingParams q = p;
  q.rows = 0;
  q.logits = nullptr;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaSuccess) << "no rows: nothing to do";
  q = p;
  q.rows = -1;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "negative rows";
  q = p;
  q.vocab = 0;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "empty vocabulary";
  q = p;
  q.vocab = int64_t{1} << 31;
  q.workspace_bytes = ~size_t{0};
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "vocab over INT32_MAX";
  q = p;
  q.logits = nullptr;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "null logits";
  q = p;
  q.params = nullptr;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "null params";
  q = p;
  q.tokens = nullptr;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "null tokens";
  q = p;
  q.workspace = nullptr;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "null workspace";
  q = p;
  q.workspace_bytes = p.workspace_bytes - 1;
  EXPECT_EQ(LaunchSampling(q, nullptr), cudaErrorInvalidValue) << "workspace one byte short";
}

}  // namespace
}  // namespace dserve::kernels::cuda
