// The forward pass against ../shared/testdata: checkpoints written by an independent generator
// with float64 outputs of an independent implementation (reference.npz). Run for every MLA
// form and every instruction set this CPU has.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"
#include "models/greedy_decode.h"
#include "tests/support/compare.h"
#include "tests/support/npz_reader.h"
#include "tests/support/test_env.h"

namespace dserve::models {
namespace {

using kernels::MlaMode;
using kernels::cpu::Isa;
using testing::NpyArray;
using testing::RelError;

// Logits: max |ours - ref| <= 1e-3 * max |ref| (the bound for an FP32-activation
// engine); intermediates are held to a tighter 1e-4 of their own scale.
constexpr double kLogitTolerance = 1e-3;
constexpr double kIntermediateTolerance = 1e-4;
// Routing is compared only where the reference's top-k boundary has a real gap: FP32 may
// legitimately pick the other expert of a near-tie.
constexpr double kMinRoutingMargin = 1e-4;

int ArgMaxRow(const double* row, int64_t n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}
int ArgMaxRow(const float* row, int64_t n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

struct Case {
  std::string checkpoint;
  MlaMode mode;
  Isa isa;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  const char* mode = info.param.mode == MlaMode::kAuto    ? "auto"
                     : info.param.mode == MlaMode::kNaive ? "naive"
                                                          : "absorbed";
  std::string name = info.param.checkpoint + "_" + mode + "_" +
                     std::string(kernels::cpu::IsaName(info.param.isa));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class ReferenceCheckpointTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!kernels::cpu::IsaSupported(GetParam().isa)) {
      GTEST_SKIP() << "this CPU lacks " << kernels::cpu::IsaName(GetParam().isa);
    }
    dir_ = testing::TestdataPath(GetParam().checkpoint);
    ref_ = testing::ReadNpz(dir_ + "/reference.npz");
    ops_ = std::make_unique<kernels::cpu::CpuOps>(2, GetParam().isa);
    auto model = DeepseekModel::Load(dir_, *ops_, /*show_progress=*/false);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(model).value();
    for (int64_t t : ref_.at("tokens").AsInts()) tokens_.push_back(static_cast<int32_t>(t));
  }

  const NpyArray& Ref(const std::string& key) const { return ref_.at(key); }

  std::string dir_;
  std::map<std::string, NpyArray> ref_;
  std::unique_ptr<kernels::cpu::CpuOps> ops_;
  std::unique_ptr<DeepseekModel> model_;
  std::vector<int32_t> tokens_;
};

TEST_P(ReferenceCheckpointTest, ForwardMatchesFloat64Reference) {
  const ModelConfig& c = model_->config();
  const int64_t T = static_cast<int64_t>(tokens_.size());
  const int64_t H = c.hidden_size, V = c.vocab_size, L = c.num_hidden_layers;
  kernels::LatentCache cache(model_->CacheShape(/*num_pages=*/4, /*page_size=*/8));
  // Pages out of order, so the block table is really followed.
  std::vector<int32_t> table = {2, 0, 3, 1};
  std::vector<int32_t> positions(T), rows(T);
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(rows.begin(), rows.end(), 0);

  std::vector<std::vector<float>> attn(L), ffn(L), layer(L);
  std::vector<std::vector<int32_t>> ids(L);
  std::vector<std::vector<float>> weights(L);
  ForwardInput in;
  in.tokens = tokens_;
  in.batch.positions = positions;
  in.batch.sequences = {{0, T, 0, table}};
  in.logit_rows = rows;
  in.mla_mode = GetParam().mode;
  in.trace = [&](const LayerTrace& t) {
    auto copy = [](const Tensor& x) {
      return std::vector<float>(x.data<float>(), x.data<float>() + x.numel());
    };
    attn[t.layer] = copy(t.attn_out);
    ffn[t.layer] = copy(t.ffn_out);
    layer[t.layer] = copy(t.layer_out);
    if (t.expert_ids) {
      ids[t.layer].assign(t.expert_ids->data<int32_t>(),
                          t.expert_ids->data<int32_t>() + t.expert_ids->numel());
      weights[t.layer] = copy(*t.expert_weights);
    }
  };
  ForwardOutput out;
  ASSERT_TRUE(model_->Forward(in, cache, &out).ok());

  // Logits: the acceptance bound and the same argmax everywhere.
  const std::vector<double> logits = Ref("logits").AsDoubles();
  ASSERT_EQ(static_cast<int64_t>(out.logits.size()), T * V);
  const double err = RelError(out.logits.data(), logits.data(), T * V);
  EXPECT_LE(err, kLogitTolerance);
  RecordProperty("logits_rel_error", std::to_string(err));
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_EQ(ArgMaxRow(out.logits.data() + t * V, V), ArgMaxRow(logits.data() + t * V, V))
        << "row " << t;
  }
  const std::vector<double> hidden = Ref("hidden_postnorm").AsDoubles();
  EXPECT_LE(RelError(out.hidden.data<float>(), hidden.data(), T * H), kIntermediateTolerance);

  // Per layer: attention, MLP/MoE and residual outputs, and what the cache holds.
  const std::vector<double> ref_attn = Ref("attn_out").AsDoubles();
  const std::vector<double> ref_ffn = Ref("ffn_out").AsDoubles();
  const std::vector<double> ref_layer = Ref("layer_out").AsDoubles();
  const std::vector<double> ref_latent = Ref("kv_latent").AsDoubles();
  const std::vector<double> ref_kpe = Ref("k_pe_rotated").AsDoubles();
  const int64_t R = c.kv_lora_rank, P = c.qk_rope_head_dim;
  for (int l = 0; l < L; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    EXPECT_LE(RelError(attn[l].data(), ref_attn.data() + l * T * H, T * H), kIntermediateTolerance);
    EXPECT_LE(RelError(ffn[l].data(), ref_ffn.data() + l * T * H, T * H), kIntermediateTolerance);
    EXPECT_LE(RelError(layer[l].data(), ref_layer.data() + l * T * H, T * H),
              kIntermediateTolerance);
    std::vector<float> latent(T * R), kpe(T * P);
    for (int64_t t = 0; t < T; ++t) {
      const float* tok = cache.SequenceToken(l, table, t);
      std::copy(tok, tok + R, latent.data() + t * R);
      std::copy(tok + R, tok + R + P, kpe.data() + t * P);
    }
    EXPECT_LE(RelError(latent.data(), ref_latent.data() + l * T * R, T * R),
              kIntermediateTolerance);
    EXPECT_LE(RelError(kpe.data(), ref_kpe.data() + l * T * P, T * P), kIntermediateTolerance);
  }

  // Routing: the same experts (as sets) and weights wherever the choice is not a near-tie.
  const std::vector<int64_t> ref_ids = Ref("moe_topk_idx").AsInts();
  const std::vector<double> ref_w = Ref("moe_topk_w").AsDoubles();
  const std::vector<double> margin = Ref("moe_margin").AsDoubles();
  const int K = c.num_experts_per_tok;
  int compared = 0;
  for (int l = 0; l < L; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    ASSERT_EQ(static_cast<int64_t>(ids[l].size()), T * K);
    for (int64_t t = 0; t < T; ++t) {
      if (!(margin[l * T + t] > kMinRoutingMargin)) continue;
      std::map<int, double> expected, got;
      for (int k = 0; k < K; ++k) {
        expected[static_cast<int>(ref_ids[(l * T + t) * K + k])] = ref_w[(l * T + t) * K + k];
        got[ids[l][t * K + k]] = weights[l][t * K + k];
      }
      ASSERT_EQ(got.size(), expected.size());
      for (const auto& [e, w] : expected) {
        ASSERT_TRUE(got.contains(e)) << "layer " << l << " token " << t << " expert " << e;
        EXPECT_NEAR(got[e], w, 1e-5 * std::max(1.0, std::fabs(w)));
      }
      ++compared;
    }
  }
  if (c.n_routed_experts > 0) {
    EXPECT_GT(compared, 0);
  }

  // The MTP head: row i combines h[i] with token i+1 at position i.
  if (!model_->has_mtp()) return;
  std::vector<float> mtp;
  ASSERT_TRUE(
      model_->ForwardMtpOverPrompt(tokens_, out.hidden, table, GetParam().mode, cache, &mtp).ok());
  const std::vector<double> ref_mtp = Ref("mtp_logits").AsDoubles();
  ASSERT_EQ(mtp.size(), ref_mtp.size());
  EXPECT_LE(RelError(mtp.data(), ref_mtp.data(), (T - 1) * V), kLogitTolerance);
  for (int64_t t = 0; t + 1 < T; ++t) {
    EXPECT_EQ(ArgMaxRow(mtp.data() + t * V, V), ArgMaxRow(ref_mtp.data() + t * V, V))
        << "MTP row " << t;
  }
}

TEST_P(ReferenceCheckpointTest, GreedyContinuationAndMtpDraftsMatch) {
  GreedyOptions o;
  const std::vector<int64_t> generated = Ref("generated").AsInts();
  o.max_new_tokens = static_cast<int>(generated.size());
  o.stop_at_eos = false;
  o.mtp_drafts = model_->has_mtp();
  o.mla_mode = GetParam().mode;
  o.page_size = 16;
  auto result = GreedyDecode(*model_, tokens_, o, /*keep_logits=*/true);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(std::vector<int64_t>(result->tokens.begin(), result->tokens.end()), generated);

  if (ref_.contains("gen_logits")) {
    const std::vector<double> gen_logits = Ref("gen_logits").AsDoubles();
    const int64_t V = model_->config().vocab_size;
    ASSERT_EQ(result->step_logits.size(), generated.size());
    for (size_t j = 0; j < generated.size(); ++j) {
      EXPECT_LE(RelError(result->step_logits[j].data(), gen_logits.data() + j * V, V),
                kLogitTolerance)
          << "step " << j;
    }
  }
  if (model_->has_mtp()) {
    const std::vector<int64_t> drafts = Ref("gen_mtp_drafts").AsInts();
    EXPECT_EQ(std::vector<int64_t>(result->drafts.begin(), result->drafts.end()), drafts);
    EXPECT_EQ(result->drafts.front(), Ref("mtp_draft_token").AsInts().front());
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* ckpt : {"micro-v3", "micro-v2"}) {
    for (MlaMode mode : {MlaMode::kAuto, MlaMode::kNaive, MlaMode::kAbsorbed}) {
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) cases.push_back({ckpt, mode, isa});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Testdata, ReferenceCheckpointTest, ::testing::ValuesIn(AllCases()),
                         CaseName);

}  // namespace
}  // namespace dserve::models
