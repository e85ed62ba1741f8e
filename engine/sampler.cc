#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <limits>

#include "core/check.h"

namespace dserve::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A token whose weight exp((logit - max) / T) is below e^-60 is left out entirely: even a
// million of them weigh < 1e-20 next to the top token's 1, under the 2^-53 resolution of both
// the float64 sums and the uniform draw, so they could never be drawn anyway.
constexpr double kNegligibleLogWeight = -60;

// ---------------------------------------------------------------------------------------------
// Random stream.

// splitmix64's finaliser: a bijection on 64 bits with full avalanche.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

// ---------------------------------------------------------------------------------------------
// Vector kernels. GCC/Clang vector extensions: 16-byte vectors are SSE2 on baseline x86-64 (and
// NEON on ARM), so no ISA dispatch is needed; a wider -march only makes them faster.

using Double2 = double __attribute__((vector_size(16)));
using U64x2 = uint64_t __attribute__((vector_size(16)));

// 2^(j/64), j = 0..63, each the nearest double (computed in 60-digit decimal).
constexpr double kExp2Table[64] = {
    0x1.0000000000000p+0, 0x1.02c9a3e778061p+0, 0x1.059b0d3158574p+0, 0x1.0874518759bc8p+0,
    0x1.0b5586cf9890fp+0, 0x1.0e3ec32d3d1a2p+0, 0x1.11301d0125b51p+0, 0x1.1429aaea92de0p+0,
    0x1.172b83c7d517bp+0, 0x1.1a35beb6fcb75p+0, 0x1.1d4873168b9aap+0, 0x1.2063b88628cd6p+0,
    0x1.2387a6e756238p+0, 0x1.26b4565e27cddp+0, 0x1.29e9df51fdee1p+0, 0x1.2d285a6e4030bp+0,
    0x1.306fe0a31b715p+0, 0x1.33c08b26416ffp+0, 0x1.371a7373aa9cbp+0, 0x1.3a7db34e59ff7p+0,
    0x1.3dea64c123422p+0, 0x1.4160a21f72e2ap+0, 0x1.44e086061892dp+0, 0x1.486a2b5c13cd0p+0,
    0x1.4bfdad5362a27p+0, 0x1.4f9b2769d2ca7p+0, 0x1.5342b569d4f82p+0, 0x1.56f4736b527dap+0,
    0x1.5ab07dd485429p+0, 0x1.5e76f15ad2148p+0, 0x1.6247eb03a5585p+0, 0x1.6623882552225p+0,
    0x1.6a09e667f3bcdp+0, 0x1.6dfb23c651a2fp+0, 0x1.71f75e8ec5f74p+0, 0x1.75feb564267c9p+0,
    0x1.7a11473eb0187p+0, 0x1.7e2f336cf4e62p+0, 0x1.82589994cce13p+0, 0x1.868d99b4492edp+0,
    0x1.8ace5422aa0dbp+0, 0x1.8f1ae99157736p+0, 0x1.93737b0cdc5e5p+0, 0x1.97d829fde4e50p+0,
    0x1.9c49182a3f090p+0, 0x1.a0c667b5de565p+0, 0x1.a5503b23e255dp+0, 0x1.a9e6b5579fdbfp+0,
    0x1.ae89f995ad3adp+0, 0x1.b33a2b84f15fbp+0, 0x1.b7f76f2fb5e47p+0, 0x1.bcc1e904bc1d2p+0,
    0x1.c199bdd85529cp+0, 0x1.c67f12e57d14bp+0, 0x1.cb720dcef9069p+0, 0x1.d072d4a07897cp+0,
    0x1.d5818dcfba487p+0, 0x1.da9e603db3285p+0, 0x1.dfc97337b9b5fp+0, 0x1.e502ee78b3ff6p+0,
    0x1.ea4afa2a490dap+0, 0x1.efa1bee615a27p+0, 0x1.f50765b6e4540p+0, 0x1.fa7c1819e90d8p+0,
};

inline uint64_t Exp2TableBits(uint64_t j) { return std::bit_cast<uint64_t>(kExp2Table[j]); }
inline U64x2 Exp2TableBits(U64x2 j) {
  return U64x2{Exp2TableBits(static_cast<uint64_t>(j[0])),
               Exp2TableBits(static_cast<uint64_t>(j[1]))};
}

// exp(x) for x in [-700, 0] to within 2 ulp (measured against glibc over the range):
// x = (64 k + j) ln2/64 + r with |r| <= ln2/128, e^x = 2^k * 2^(j/64) * e^r, e^r by its
// degree-5 Taylor polynomial (truncation < 4e-17). A template so the scalar and the vector
// paths do the very same operations and agree on every weight. glibc's exp() is not vectorised
// without -ffast-math; this is, at about half its cost per element even on SSE2, and it is the
// inner loop of the normaliser over the whole vocabulary. Outside the range the result is
// garbage, which callers mask or clamp away.
template <typename D, typename U>
inline D ExpNonPositive(D x) {
  constexpr double kScale = 64 / 0.69314718055994530942;
  constexpr double kShifter = 0x1.8p52;  // adding it rounds to an integer, kept in the low bits
  // ln2/64 split so that n * kLn2Hi is exact for |n| < 2^20.
  constexpr double kLn2Hi = 0.69314718036912381649 / 64;
  constexpr double kLn2Lo = 1.90821492927058770002e-10 / 64;
  D nd = x * kScale + kShifter;
  const U bits = std::bit_cast<U>(nd);  // low bits: n = 64 k + j, two's complement
  nd = nd - kShifter;
  D r = x - nd * kLn2Hi;
  r = r - nd * kLn2Lo;
  D p = r * (1.0 / 120) + 1.0 / 24;
  p = p * r + 1.0 / 6;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // 2^(j/64) with k added to its exponent field (the high bits of bits >> 6 shift out).
  const U scale = Exp2TableBits(bits & 63) + ((bits >> 6) << 52);
  return p * std::bit_cast<D>(scale);
}

// The weight of candidates: exp((logit - max) / T), float64.
struct Weigher {
  double max_logit;
  double inv_temperature;

  double operator()(float logit) const {
    double x = (logit - max_logit) * inv_temperature;
    x = x < -700.0 ? -700.0 : x;
    return ExpNonPositive<double, uint64_t>(x);
  }
};

// Largest element, NaN ignored (-inf when there is none). Independent lanes let the compiler
// use packed max instructions; a single running max would be a serial dependency chain. Built
// for the widest vectors the CPU has (the engine is otherwise compiled for baseline x86-64):
// greedy decoding scans the whole vocabulary per token.
#if defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
float MaxOf(const float* x, size_t n) {
  constexpr size_t kLanes = 16;
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, kNegInf);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t k = 0; k < kLanes; ++k) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
  }
  float m = kNegInf;
  for (float lane : lanes) m = lane > m ? lane : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Whether any of x[0, kCount) exceeds bar; a fixed count lets the compiler unroll it into packed
// compares.
template <size_t kCount>
inline bool AnyAbove(const float* x, float bar) {
  int any = 0;
  for (size_t i = 0; i < kCount; ++i) any |= x[i] > bar;
  return any != 0;
}

constexpr size_t kBlock = 512;

// Lowest id of the largest logit, or -1 when every logit is -inf or NaN. One read of the
// logits: a block is rescanned (from L1) only when its vectorised maximum beats the best.
int32_t ArgMax(std::span<const float> logits) {
  float best = kNegInf;
  int32_t best_id = -1;
  for (size_t begin = 0; begin < logits.size(); begin += kBlock) {
    const size_t n = std::min(kBlock, logits.size() - begin);
    const float block_max = MaxOf(logits.data() + begin, n);
    if (block_max > best) {
      best = block_max;
      best_id = static_cast<int32_t>(
          begin + (std::find(logits.data() + begin, logits.data() + begin + n, block_max) -
                   (logits.data() + begin)));
    }
  }
  return best_id;
}

// Sum of weights over the logits >= floor (the rest, NaN included, count 0). The floor must be
// at least max_logit - 700 T, where ExpNonPositive's range ends.
double SumWeights(std::span<const float> logits, float floor, const Weigher& weigh) {
  const float* x = logits.data();
  const size_t n = logits.size();
  const Double2 floor2 = {floor, floor};
  Double2 acc[4] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // Four independent chains keep the polynomial's latency hidden.
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const Double2 l = {x[i + 2 * k], x[i + 2 * k + 1]};
      // No clamp: lanes far enough below max to leave ExpNonPositive's range are under the
      // floor too, and the mask clears whatever they computed (NaN included).
      const Double2 d = (l - weigh.max_logit) * weigh.inv_temperature;
      const Double2 w = ExpNonPositive<Double2, U64x2>(d);
      const U64x2 keep = (U64x2)(l >= floor2);
      acc[k] += std::bit_cast<Double2>(std::bit_cast<U64x2>(w) & keep);
    }
  }
  const Double2 total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  double sum = total[0] + total[1];
  for (; i < n; ++i) {
    if (x[i] >= floor) sum += weigh(x[i]);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Ordering.

struct Candidate {
  float logit;
  int32_t id;
};

// The sampler's one total order: descending logit (so descending probability), ties -> lower id.
// A function object, not a function, so that std::sort and nth_element inline it.
struct Before {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  }
};

// The (at most) m first candidates in `Before` order among the logits >= floor, sorted, into
// `out`. One pass: a logit enters a buffer only if it beats the m-th best so far, and the
// buffer is cut back to m with nth_element when it fills, raising that bar; 64-logit blocks
// with nothing above the bar are skipped after one packed compare. A logit equal to the bar never
// enters: ids arrive ascending, so it ranks after the candidate that set the bar.
void SelectTop(std::span<const float> logits, float floor, size_t m, std::vector<Candidate>& out) {
  out.clear();
  if (m == 0) return;
  const size_t capacity = m + std::max<size_t>(m, 1024);
  // `l > bar` must mean `l >= floor` until the buffer first fills.
  float bar = std::nextafter(floor, kNegInf);
  auto cut_to_m = [&] {
    std::nth_element(out.begin(), out.begin() + (m - 1), out.end(), Before());
    out.resize(m);
    bar = out[m - 1].logit;
  };
  // Small blocks: once the bar is in the top percent, most 64-logit blocks fall below it.
  constexpr size_t kSelectBlock = 64;
  const float* x = logits.data();
  for (size_t begin = 0; begin < logits.size(); begin += kSelectBlock) {
    const size_t end = std::min(begin + kSelectBlock, logits.size());
    if (end - begin == kSelectBlock && !AnyAbove<kSelectBlock>(x + begin, bar)) continue;
    for (size_t i = begin; i < end; ++i) {
      if (x[i] > bar) {
        out.push_back({x[i], static_cast<int32_t>(i)});
        if (out.size() >= capacity) cut_to_m();
      }
    }
  }
  if (out.size() > m) cut_to_m();
  std::sort(out.begin(), out.end(), Before());
}

// Candidates (logits >= floor) in descending order, sorted only as far as a walk reaches:
// the top 256, then 16x more per step. Rank j's candidate is the same whichever step it was
// found in, since the order is total.
class DescendingWalk {
 public:
  static constexpr size_t kFirstFetch = 256;

  DescendingWalk(std::span<const float> logits, float floor, std::vector<Candidate>& storage)
      : logits_(logits), floor_(floor), sorted_(storage) {
    sorted_.clear();
  }

  // Rank j's candidate, or nullptr when there are no more than j candidates.
  const Candidate* At(size_t j) {
    while (j >= sorted_.size() && !complete_) {
      fetched_ = fetched_ == 0 ? kFirstFetch : fetched_ * 16;
      SelectTop(logits_, floor_, fetched_, sorted_);
      complete_ = sorted_.size() < fetched_;
    }
    return j < sorted_.size() ? &sorted_[j] : nullptr;
  }

 private:
  std::span<const float> logits_;
  float floor_;
  std::vector<Candidate>& sorted_;
  size_t fetched_ = 0;
  bool complete_ = false;
};

// The smallest float f with f >= x, so that `logit >= f` decides `(double)logit >= x` exactly.
float FloatFloor(double x) {
  if (!(x > -std::numeric_limits<float>::max())) return kNegInf;
  float f = static_cast<float>(x);
  if (static_cast<double>(f) < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// Inverse CDF over a descending, renormalised prefix: the first candidate whose cumulative
// weight exceeds u * total; rounding past the end falls back to the last one with weight.
int32_t PickFromPrefix(std::span<const Candidate> kept, const Weigher& weigh, double u) {
  double total = 0;
  for (const Candidate& c : kept) total += weigh(c.logit);
  const double target = u * total;
  double cumulative = 0;
  size_t last_positive = 0;
  for (size_t j = 0; j < kept.size(); ++j) {
    const double w = weigh(kept[j].logit);
    cumulative += w;
    if (w > 0) last_positive = j;
    if (cumulative > target) return kept[j].id;
  }
  return kept[last_positive].id;
}

// ---------------------------------------------------------------------------------------------
// Scratch and changes.

using Change = std::pair<int32_t, float>;  // (token, logit replacing the model's)

// Per-thread buffers; they grow to the largest vocabulary seen and are then reused.
struct Scratch {
  std::vector<Candidate> candidates;
  std::vector<float> modified;
  std::vector<Change> changes;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The logits the filters see: the model's, or a patched copy when bans or penalties apply.
std::span<const float> ModifiedLogits(std::span<const float> logits, const SamplingParams& p,
                                      const PenaltyState& penalties,
                                      std::span<const int32_t> banned_ids, Scratch& s) {
  s.changes.clear();
  penalties.AppendChanges(p, logits, s.changes);
  if (s.changes.empty() && banned_ids.empty()) return logits;
  s.modified.assign(logits.begin(), logits.end());
  for (const Change& change : s.changes) s.modified[change.first] = change.second;
  // Bans last, so they win over a penalty (a negative one could otherwise revive a token).
  for (int32_t id : banned_ids) {
    DSERVE_CHECK(id >= 0 && static_cast<size_t>(id) < logits.size())
        << "banned id " << id << " outside the vocabulary of " << logits.size();
    s.modified[id] = kNegInf;
  }
  return s.modified;
}

// ---------------------------------------------------------------------------------------------
// Sampling.

// The walk along a descending prefix that top_p keeps: its length, at least 1 when there is a
// candidate. `at(j)` gives rank j's candidate or nullptr past the end.
template <typename At>
size_t TopPLength(At at, const Weigher& weigh, double top_p, double total) {
  const double target = top_p * total;
  double cumulative = 0;
  size_t m = 0;
  while (const Candidate* c = at(m)) {
    cumulative += weigh(c->logit);
    ++m;
    if (cumulative >= target) break;
  }
  return m;
}

int32_t Draw(std::span<const float> logits, const SamplingParams& p, SequenceRng& rng, Scratch& s) {
  const bool top_p = p.top_p < 1.0f;
  const bool top_k = p.top_k > 0 && static_cast<size_t>(p.top_k) < logits.size();
  std::vector<Candidate>& kept = s.candidates;
  // With top_k the selection comes first and its head is the maximum, saving a pass.
  if (top_k) SelectTop(logits, -std::numeric_limits<float>::max(), p.top_k, kept);
  const float max_logit =
      top_k ? (kept.empty() ? kNegInf : kept[0].logit) : MaxOf(logits.data(), logits.size());
  if (max_logit == kNegInf) return -1;
  DSERVE_CHECK(std::isfinite(max_logit)) << "a logit is +inf";

  const double temperature = p.temperature;
  const Weigher weigh{max_logit, 1.0 / temperature};
  const float negligible = FloatFloor(max_logit + kNegligibleLogWeight * temperature);
  // p_i >= min_p * p_max  <=>  logit_i >= max + T ln(min_p), decided on the float logits so
  // that every pass agrees on it; the top token always passes.
  const float min_p_floor =
      p.min_p > 0
          ? std::max(negligible,
                     FloatFloor(max_logit + temperature * std::log(static_cast<double>(p.min_p))))
          : negligible;

  if (top_k || (!top_p && p.min_p > 0)) {
    // A small kept set found by one selection pass: the top k, or (min_p alone) everything
    // above min_p's floor; no weight outside it is ever computed.
    if (!top_k) SelectTop(logits, min_p_floor, logits.size(), kept);
    size_t m = kept.size();
    while (m > 1 && kept[m - 1].logit < negligible) --m;
    if (top_p) {
      double total = 0;
      for (size_t j = 0; j < m; ++j) total += weigh(kept[j].logit);
      m = TopPLength([&](size_t j) { return j < m ? &kept[j] : nullptr; }, weigh, p.top_p, total);
    }
    while (m > 1 && kept[m - 1].logit < min_p_floor) --m;
    return PickFromPrefix(std::span(kept).first(m), weigh, rng.Uniform());
  }

  // top_p over the whole vocabulary, or plain temperature: the normaliser needs every token.
  const double total = SumWeights(logits, negligible, weigh);
  DescendingWalk walk(logits, negligible, kept);
  if (top_p) {
    size_t m = TopPLength([&](size_t j) { return walk.At(j); }, weigh, p.top_p, total);
    while (m > 1 && kept[m - 1].logit < min_p_floor) --m;
    return PickFromPrefix(std::span(kept).first(m), weigh, rng.Uniform());
  }
  // Every candidate is kept: walk only as far as the draw lands.
  const double target = rng.Uniform() * total;
  double cumulative = 0;
  const Candidate* last_positive = walk.At(0);
  for (size_t j = 0;; ++j) {
    const Candidate* c = walk.At(j);
    if (c == nullptr) return last_positive->id;
    const double w = weigh(c->logit);
    cumulative += w;
    if (w > 0) last_positive = c;
    if (cumulative > target) return c->id;
  }
}

// log_softmax of the unmodified logits: the chosen token's and the top k. NaN counts as -inf.
void FillRawLogprobs(std::span<const float> logits, int k, Scratch& s, SampledToken& out) {
  const float max_logit = MaxOf(logits.data(), logits.size());
  const Weigher weigh{max_logit, 1.0};
  const double log_normaliser =
      max_logit + std::log(SumWeights(logits, FloatFloor(max_logit - 700.0), weigh));
  auto logprob_of = [&](float l) -> float {
    return std::isnan(l) ? kNegInf : static_cast<float>(l - log_normaliser);
  };
  out.logprob = logprob_of(logits[out.token]);
  const size_t top = std::min(static_cast<size_t>(k), logits.size());
  std::vector<Candidate>& best = s.candidates;
  SelectTop(logits, -std::numeric_limits<float>::max(), top, best);
  out.top.clear();
  for (const Candidate& c : best) out.top.push_back({c.id, logprob_of(c.logit)});
  // Fewer finite logits than k: the rest rank by id, all at -inf.
  for (size_t i = 0; out.top.size() < top; ++i) {
    if (!(logits[i] >= -std::numeric_limits<float>::max())) {
      out.top.push_back({static_cast<int32_t>(i), kNegInf});
    }
  }
}

}  // namespace

SequenceRng::SequenceRng(uint64_t seed) : key_(Mix64(seed ^ kGolden)) {}

double SequenceRng::Uniform() {
  // A Weyl sequence keyed by the hashed seed, mixed twice so that nearby seeds and nearby
  // counters give unrelated outputs.
  const uint64_t bits = Mix64(Mix64(key_ + counter_ * kGolden) ^ key_);
  ++counter_;
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

PenaltyState::PenaltyState(std::span<const int32_t> prompt)
    : prompt_tokens_(prompt.begin(), prompt.end()) {
  std::sort(prompt_tokens_.begin(), prompt_tokens_.end());
  prompt_tokens_.erase(std::unique(prompt_tokens_.begin(), prompt_tokens_.end()),
                       prompt_tokens_.end());
  DSERVE_CHECK(prompt_tokens_.empty() || prompt_tokens_.front() >= 0)
      << "negative prompt token " << prompt_tokens_.front();
}

void PenaltyState::Add(int32_t generated_token) {
  DSERVE_CHECK(generated_token >= 0) << "generated token " << generated_token;
  auto it = std::lower_bound(generated_.begin(), generated_.end(), generated_token,
                             [](const Generated& g, int32_t token) { return g.token < token; });
  if (it != generated_.end() && it->token == generated_token) {
    ++it->count;
  } else {
    generated_.insert(it, {generated_token, 1});
  }
  ++num_generated_;
}

bool PenaltyState::InPrompt(int32_t token) const {
  return std::binary_search(prompt_tokens_.begin(), prompt_tokens_.end(), token);
}

int32_t PenaltyState::Count(int32_t token) const {
  auto it = std::lower_bound(generated_.begin(), generated_.end(), token,
                             [](const Generated& g, int32_t t) { return g.token < t; });
  return it != generated_.end() && it->token == token ? it->count : 0;
}

void PenaltyState::AppendChanges(const SamplingParams& p, std::span<const float> logits,
                                 std::vector<std::pair<int32_t, float>>& out) const {
  const bool repetition = p.repetition_penalty != 1.0f;
  const bool additive = p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  const float r = p.repetition_penalty;
  auto apply = [&](int32_t token, int32_t count) {
    DSERVE_CHECK(static_cast<size_t>(token) < logits.size())
        << "token " << token << " outside the vocabulary of " << logits.size();
    float l = logits[token];
    if (repetition) l = l > 0 ? l / r : l * r;
    if (additive && count > 0) {
      l -= p.frequency_penalty * static_cast<float>(count);
      l -= p.presence_penalty;
    }
    out.push_back({token, l});
  };
  if (repetition) {
    // Union of the two sorted lists, each token once.
    size_t i = 0, j = 0;
    while (i < prompt_tokens_.size() || j < generated_.size()) {
      if (j == generated_.size() ||
          (i < prompt_tokens_.size() && prompt_tokens_[i] < generated_[j].token)) {
        apply(prompt_tokens_[i++], 0);
      } else {
        if (i < prompt_tokens_.size() && prompt_tokens_[i] == generated_[j].token) ++i;
        apply(generated_[j].token, generated_[j].count);
        ++j;
      }
    }
  } else if (additive) {
    for (const Generated& g : generated_) apply(g.token, g.count);
  }
}

SampledToken Sample(std::span<const float> logits, const SamplingParams& p,
                    const PenaltyState& penalties, std::span<const int32_t> banned_ids,
                    SequenceRng& rng) {
  DSERVE_CHECK(!logits.empty()) << "empty logits";
  DSERVE_CHECK(p.temperature >= 0) << "temperature " << p.temperature << " (not validated?)";
  Scratch& s = ThreadScratch();
  const std::span<const float> modified = ModifiedLogits(logits, p, penalties, banned_ids, s);

  SampledToken out;
  out.token = p.temperature == 0.0f ? ArgMax(modified) : Draw(modified, p, rng, s);
  DSERVE_CHECK(out.token >= 0) << "no token can be sampled: every logit is -inf, NaN or banned";
  if (p.logprobs.has_value()) {
    DSERVE_CHECK(*p.logprobs >= 0) << "logprobs " << *p.logprobs;
    FillRawLogprobs(logits, *p.logprobs, s, out);
  }
  return out;
}

}  // namespace dserve::engine
