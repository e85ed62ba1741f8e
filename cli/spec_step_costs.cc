#include "cli/spec_step_costs.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/engine_flags.h"
#include "core/progress.h"
#include "engine/engine_core.h"
#include "kernels/latent_cache.h"

namespace dserve::cli {
namespace {

using Clock = std::chrono::steady_clock;
using kernels::MlaMode;

// DeepSeek-V3's weights one decode token reads, in billions (FP8 projections, BF16 head): 58
// MoE layers x 8 routed experts of 3 x 7168 x 2048, everything else (61 MLA blocks, 3 dense
// MLPs, 58 shared experts, routers), and the LM head 129280 x 7168 — 2.5% of the total.
constexpr double kV3RoutedB = 58 * 8 * 3 * 7168.0 * 2048 / 1e9;  // 20.4
constexpr double kV3HeadB = 129280.0 * 7168 / 1e9;               // 0.93
constexpr double kV3TotalB = 36.5;
constexpr int kV3Layers = 61;
constexpr double kV3Experts = 256, kV3TopK = 8;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// B sequences of `context` cached tokens in one latent cache, ready for decode-like steps.
class StepBench {
 public:
  StepBench(models::DeepseekModel& model, int64_t batch, int64_t context, int max_new)
      : model_(model), batch_(batch), context_(context), rng_(7) {
    const int64_t page = 64;
    const int64_t pages_per_seq = (context + max_new + page) / page;
    shape_ = model.CacheShape(batch * pages_per_seq, page);
    shape_.dtype = DType::kBF16;
    tables_.resize(batch);
    for (int64_t b = 0; b < batch; ++b) {
      tables_[b].resize(pages_per_seq);
      std::iota(tables_[b].begin(), tables_[b].end(), static_cast<int32_t>(b * pages_per_seq));
    }
  }

  // Fills every sequence's cache (main layers and the MTP layer) with a random prompt.
  absl::Status Prefill() {
    DSERVE_ASSIGN_OR_RETURN(cache_, model_.NewLatentCache(shape_));
    std::vector<int32_t> tokens = RandomTokens(batch_ * context_);
    std::vector<int32_t> positions;
    models::ForwardInput in;
    for (int64_t b = 0; b < batch_; ++b) {
      for (int64_t i = 0; i < context_; ++i) positions.push_back(static_cast<int32_t>(i));
      in.batch.sequences.push_back({b * context_, context_, 0, tables_[b], MlaMode::kNaive});
    }
    in.tokens = tokens;
    in.batch.positions = positions;
    models::ForwardOutput out;
    DSERVE_RETURN_IF_ERROR(model_.Forward(in, cache_, &out));
    if (!model_.has_mtp()) return absl::OkStatus();
    // Row i pairs the state at i with token i + 1 (a fresh token after the last).
    std::vector<int32_t> next(tokens.begin() + 1, tokens.end());
    next.push_back(RandomTokens(1)[0]);
    models::MtpInput m;
    m.next_tokens = next;
    m.hidden = &out.hidden;
    m.batch = in.batch;
    std::vector<float> logits;
    return model_.ForwardMtp(m, cache_, &logits);
  }

  // Seconds of one main forward with `s` new tokens per sequence; with_head: logits of all rows
  // (as verification needs), else none.
  absl::StatusOr<double> Main(int64_t s, bool with_head) {
    const std::vector<int32_t> tokens = RandomTokens(batch_ * s);
    models::ForwardInput in;
    std::vector<int32_t> positions, rows;
    for (int64_t b = 0; b < batch_; ++b) {
      for (int64_t i = 0; i < s; ++i) positions.push_back(static_cast<int32_t>(context_ + i));
      in.batch.sequences.push_back({b * s, s, context_, tables_[b], MlaMode::kAbsorbed});
    }
    if (with_head) {
      rows.resize(tokens.size());
      std::iota(rows.begin(), rows.end(), 0);
    }
    in.tokens = tokens;
    in.batch.positions = positions;
    in.logit_rows = rows;
    const auto t0 = Clock::now();
    DSERVE_RETURN_IF_ERROR(model_.Forward(in, cache_, &main_out_));
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // Seconds of one MTP forward, one row per sequence (what drafting runs per draft).
  absl::StatusOr<double> Mtp(bool with_head) {
    const std::vector<int32_t> tokens = RandomTokens(batch_);
    Tensor hidden = Tensor::Zeros(DType::kF32, {batch_, model_.config().hidden_size});
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < hidden.numel(); ++i) hidden.data<float>()[i] = normal(rng_);
    DSERVE_RETURN_IF_ERROR(model_.ops().PlaceTensor(hidden));
    models::MtpInput m;
    std::vector<int32_t> positions(batch_, static_cast<int32_t>(context_)), rows;
    for (int64_t b = 0; b < batch_; ++b) {
      m.batch.sequences.push_back({b, 1, context_, tables_[b], MlaMode::kAbsorbed});
    }
    if (with_head) {
      rows.resize(batch_);
      std::iota(rows.begin(), rows.end(), 0);
    }
    m.next_tokens = tokens;
    m.hidden = &hidden;
    m.batch.positions = positions;
    m.logit_rows = rows;
    const auto t0 = Clock::now();
    DSERVE_RETURN_IF_ERROR(model_.ForwardMtp(m, cache_, &mtp_logits_));
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

 private:
  std::vector<int32_t> RandomTokens(int64_t n) {
    std::uniform_int_distribution<int32_t> id(100, static_cast<int32_t>(
                                                       model_.config().vocab_size - 1));
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = id(rng_);
    return t;
  }

  models::DeepseekModel& model_;
  int64_t batch_, context_;
  std::mt19937 rng_;
  kernels::LatentCacheShape shape_;
  kernels::LatentCache cache_;  // made by Prefill()
  std::vector<std::vector<int32_t>> tables_;
  models::ForwardOutput main_out_;
  std::vector<float> mtp_logits_;
};

struct Costs {
  std::vector<double> main, body;  // [s - 1]: with all rows' logits / with none
  double mtp = 0, mtp_body = 0;
};

double Expected(double acceptance, int k) {  // tokens per verification, i.i.d. acceptance
  double e = 0, p = 1;
  for (int j = 0; j <= k; ++j, p *= acceptance) e += p;
  return e;
}

void Print(const Costs& c, int64_t batch, int64_t context, int max_k, double acceptance,
           int layers, int64_t runs) {
  auto ms = [](double s) { return s * 1e3; };
  std::printf("batch %lld, context %lld (medians of %lld runs)\n", static_cast<long long>(batch),
              static_cast<long long>(context), static_cast<long long>(runs));
  for (int s = 1; s <= max_k + 1; ++s) {
    const double head = c.main[s - 1] - c.body[s - 1];
    std::printf("  main forward, %d token%s/seq  %8.2f ms  (layers %.2f ms = %.2fx of 1 token; "
                "LM head %.2f ms, %.0f%%)\n",
                s, s > 1 ? "s" : " ", ms(c.main[s - 1]), ms(c.body[s - 1]),
                c.body[s - 1] / c.body[0], ms(head), 100.0 * head / c.main[s - 1]);
  }
  const double mtp_head = c.mtp - c.mtp_body;
  std::printf("  MTP forward, 1 row/seq     %8.2f ms  (layer + eh_proj %.2f ms = %.2f main layers; "
              "head %.2f ms)\n",
              ms(c.mtp), ms(c.mtp_body), c.mtp_body / (c.body[0] / layers), ms(mtp_head));
  // This model: a verification step with K drafts costs main(K + 1) + K MTP passes.
  std::printf("  implied speedup, this model, acceptance %.2f per draft:", acceptance);
  for (int k = 1; k <= max_k; ++k) {
    const double cost = (c.main[k] + k * c.mtp) / c.main[0];
    std::printf("  K=%d %.2fx", k, Expected(acceptance, k) / cost);
  }
  std::printf("\n");
  // DeepSeek-V3's proportions: the layers 97.5% of the bytes a token reads, the head 2.5%; its
  // layers scale with tokens per sequence as this model's do, the MTP layer costs what it costs
  // here relative to one main layer, its head what the main head costs for one row.
  const double head_share = kV3HeadB / kV3TotalB, body_share = 1 - head_share;
  const double head1 = c.main[0] - c.body[0];
  std::printf("  implied speedup, DeepSeek-V3 proportions (%d layers, LM head %.1f%% of weights "
              "read), measured scaling:",
              kV3Layers, 100 * head_share);
  for (int k = 1; k <= max_k; ++k) {
    const double main = body_share * c.body[k] / c.body[0] +
                        head_share * (c.main[k] - c.body[k]) / head1;
    const double mtp = body_share / kV3Layers * c.mtp_body / (c.body[0] / layers) +
                       head_share * mtp_head / head1;
    std::printf("  K=%d %.2fx", k, Expected(acceptance, k) / (main + k * mtp));
  }
  std::printf("\n");
  if (batch == 1) {
    // At batch 1 a V3 step is bound by the bytes it reads: k + 1 tokens route to more distinct
    // experts (256 x (1 - (1 - 8/256)^(k+1)) instead of 8), the rest is read once.
    std::printf("  implied speedup, DeepSeek-V3 at batch 1, weight bytes (routed experts read "
                "per distinct expert):");
    for (int k = 1; k <= max_k; ++k) {
      const double distinct = kV3Experts * (1 - std::pow(1 - kV3TopK / kV3Experts, k + 1));
      const double main = (kV3TotalB + kV3RoutedB * (distinct / kV3TopK - 1)) / kV3TotalB;
      const double mtp = (kV3TotalB - kV3HeadB) / kV3Layers / kV3TotalB + head_share;
      std::printf("  K=%d %.2fx", k, Expected(acceptance, k) / (main + k * mtp));
    }
    std::printf("\n");
  }
}

}  // namespace

std::vector<FlagSpec> StepCostFlags() {
  return {
      {"step-costs",
       "speculative decoding's step costs: main forward by tokens per sequence, MTP forward, "
       "LM head (batch sizes from --concurrency, context --input-len, drafts up to the largest "
       "--num-speculative-tokens, default 3), and the speedup they imply",
       "", true},
      {"acceptance", "--step-costs: acceptance rate per draft for the implied speedups", "0.85"},
  };
}

absl::Status RunStepCosts(const Flags& flags, ModelSession& session) {
  models::DeepseekModel& model = *session.model;
  if (!model.has_mtp()) {
    return absl::InvalidArgumentError("--step-costs needs a checkpoint with its MTP layer");
  }
  double acceptance;
  if (!absl::SimpleAtod(flags.Get("acceptance"), &acceptance) || acceptance < 0 ||
      acceptance > 1) {
    return absl::InvalidArgumentError("--acceptance must be a number in [0, 1]");
  }
  DSERVE_ASSIGN_OR_RETURN(const int64_t context, flags.GetInt("input-len", 1, 1 << 20));
  int64_t runs = 5;
  if (flags.Has("runs")) {
    DSERVE_ASSIGN_OR_RETURN(runs, flags.GetInt("runs", 1, 100));
  }
  int max_k = 3;  // unless --speculative mtp --num-speculative-tokens says otherwise
  if (flags.Has("speculative") || flags.Has("num-speculative-tokens")) {
    DSERVE_ASSIGN_OR_RETURN(const std::vector<int> drafts, ParseSpeculativeTokens(flags));
    max_k = std::max(1, *std::max_element(drafts.begin(), drafts.end()));
  }
  std::vector<int64_t> batches;
  for (absl::string_view item : absl::StrSplit(flags.Get("concurrency"), ',')) {
    int64_t b;
    if (!absl::SimpleAtoi(item, &b) || b < 1 || b > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("--concurrency: '", std::string(item), "' must be from 1 to 4096"));
    }
    batches.push_back(b);
  }
  const int layers = model.config().num_hidden_layers;
  std::printf("model %s: %d layers + MTP, vocab %lld, %d threads\n", flags.Get("model").c_str(),
              layers, static_cast<long long>(model.config().vocab_size),
              session.threads);
  for (int64_t batch : batches) {
    StepBench bench(model, batch, context, max_k + 1);
    DSERVE_RETURN_IF_ERROR(bench.Prefill());
    std::vector<std::vector<double>> main(max_k + 1), body(max_k + 1);
    std::vector<double> mtp, mtp_body;
    Progress progress(absl::StrCat("step costs at batch ", batch), runs + 1, "runs");
    for (int64_t r = 0; r <= runs; ++r) {  // run 0 warms up
      for (int s = 1; s <= max_k + 1; ++s) {
        DSERVE_ASSIGN_OR_RETURN(const double with, bench.Main(s, true));
        DSERVE_ASSIGN_OR_RETURN(const double without, bench.Main(s, false));
        if (r > 0) {
          main[s - 1].push_back(with);
          body[s - 1].push_back(without);
        }
      }
      DSERVE_ASSIGN_OR_RETURN(const double with, bench.Mtp(true));
      DSERVE_ASSIGN_OR_RETURN(const double without, bench.Mtp(false));
      if (r > 0) {
        mtp.push_back(with);
        mtp_body.push_back(without);
      }
      progress.Advance(1);
    }
    progress.Finish();
    Costs c;
    for (int s = 0; s <= max_k; ++s) {
      c.main.push_back(Median(main[s]));
      c.body.push_back(Median(body[s]));
    }
    c.mtp = Median(mtp);
    c.mtp_body = Median(mtp_body);
    Print(c, batch, context, max_k, acceptance, layers, runs);
  }
  return absl::OkStatus();
}

}  // namespace dserve::cli
