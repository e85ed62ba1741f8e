// The model split over ranks (models/parallel_config.h) with the in-process communicator, one
// thread per rank, against the same model on one rank: tiny-v3 (16 experts) and tiny-v3-e64
// (64 experts in 8 groups) with EP 2 and 4, TP 2, and EP x TP 2. Every rank loads only its
// part (checked against the checkpoint's tensors); rank 0 drives a greedy decode and the others
// follow it; expert parallelism alone gives the single rank's logits bit for bit (the same
// products, added in the same order), tensor parallelism within 1e-5 of the largest logit
// (partial sums added over the ranks); greedy tokens (with the MTP head's drafts) are the
// single rank's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"
#include "models/greedy_decode.h"
#include "parallel/in_process_communicator.h"
#include "tests/support/generated_model.h"

namespace dserve::models {
namespace {

const std::string& PresetDir(const std::string& preset) {
  return dserve::testing::GeneratedModelDir(preset, 17);
}

struct RankResult {
  GreedyResult greedy;  // rank 0 (the only one driven; the others follow it)
  std::vector<int64_t> experts_per_layer;
  absl::Status status;
};

// Loads the model on `world` ranks (or one, unsplit, with world 0); rank 0 runs the greedy
// decode while the others follow its calls (DeepseekModel::Follow), as the engine's ranks do.
std::vector<RankResult> RunRanks(const std::string& dir, int world, int ep, int tp, bool dp,
                                 const std::vector<int32_t>& prompt) {
  const int n = std::max(world, 1);
  std::vector<RankResult> results(n);
  parallel::InProcessGroup group(n);
  auto run = [&](int r) {
    kernels::cpu::CpuOps ops(1);
    ParallelConfig p;
    if (world > 0) {
      p.ep_size = ep;
      p.tp_size = tp;
      p.dp_attention = dp;
      p.comm = &group.rank(r);
    }
    absl::StatusOr<std::unique_ptr<DeepseekModel>> model = DeepseekModel::Load(dir, ops, false, p);
    if (!model.ok()) {
      results[r].status = model.status();
      return;
    }
    const DeepseekModel& m = **model;
    for (const BlockWeights& b : m.weights().layers) {
      results[r].experts_per_layer.push_back(static_cast<int64_t>(b.moe.experts.size()));
    }
    // Each rank's experts are the checkpoint's own tensors, this rank's slice of them.
    const int64_t per = m.config().n_routed_experts / std::max(ep, 1);
    for (int layer = 0; layer < m.config().num_hidden_layers; ++layer) {
      const BlockWeights& b = m.weights().layers[layer];
      for (size_t i = 0; i < b.moe.experts.size(); ++i) {
        const int64_t e = (ep > 1 ? per * r : 0) + static_cast<int64_t>(i);
        const TensorEntry* t = m.checkpoint().Find(absl::StrCat(
            "model.layers.", layer, ".mlp.experts.", e, ".up_proj.weight"));
        ASSERT_NE(t, nullptr);
        if (tp == 1) {
          EXPECT_EQ(b.moe.experts[i].up.data, t->data) << "rank " << r << ", layer " << layer
                                                       << ", expert " << e;
        }
      }
    }
    if (r > 0) {
      results[r].status = (*model)->Follow();
      return;
    }
    GreedyOptions o;
    o.max_new_tokens = 8;
    o.stop_at_eos = false;
    o.mtp_drafts = true;
    absl::StatusOr<GreedyResult> g = GreedyDecode(**model, prompt, o, /*keep_logits=*/true);
    const absl::Status stopped = (*model)->StopFollowers();
    if (!g.ok()) {
      results[r].status = g.status();
      return;
    }
    results[r].status = stopped;
    results[r].greedy = std::move(g).value();
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(run, r);
  for (std::thread& t : threads) t.join();
  return results;
}

double MaxRelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return err / scale;
}

void ExpectMatchesOneRank(const std::string& preset, int world, int ep, int tp,
                          bool dp = false) {
  SCOPED_TRACE(absl::StrCat(preset, ": EP ", ep, ", TP ", tp, dp ? ", DP attention" : "", " on ",
                            world, " ranks"));
  const std::string& dir = PresetDir(preset);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back((i * 7919 + 13) % 129280);
  const std::vector<RankResult> one = RunRanks(dir, 0, 1, 1, false, prompt);
  ASSERT_TRUE(one[0].status.ok()) << one[0].status;
  const std::vector<RankResult> many = RunRanks(dir, world, ep, tp, dp, prompt);
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(many[r].status.ok()) << "rank " << r << ": " << many[r].status;
    for (size_t layer = 0; layer < many[r].experts_per_layer.size(); ++layer) {
      const int64_t all = one[0].experts_per_layer[layer];
      EXPECT_EQ(many[r].experts_per_layer[layer], ep > 1 ? all / ep : all)
          << "rank " << r << ", layer " << layer;
    }
  }
  const GreedyResult& got = many[0].greedy;
  const GreedyResult& want = one[0].greedy;
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.drafts, want.drafts);
  ASSERT_EQ(got.step_logits.size(), want.step_logits.size());
  double worst = 0;
  for (size_t s = 0; s < want.step_logits.size(); ++s) {
    worst = std::max(worst, MaxRelativeError(got.step_logits[s], want.step_logits[s]));
    if (tp == 1) {
      EXPECT_EQ(got.step_logits[s], want.step_logits[s]) << "step " << s;
    }
  }
  EXPECT_LE(worst, 1e-5);
  std::printf("%s EP %d TP %d%s: max |logit - one rank's| / max |logit| %.3g\n", preset.c_str(),
              ep, tp, dp ? " DP" : "", worst);
}

TEST(ParallelModelTest, ExpertParallelTinyV3) {
  ExpectMatchesOneRank("tiny-v3", 2, 2, 1);
  ExpectMatchesOneRank("tiny-v3", 4, 4, 1);
}

TEST(ParallelModelTest, TensorParallelTinyV3) {
  ExpectMatchesOneRank("tiny-v3", 2, 1, 2);
  ExpectMatchesOneRank("tiny-v3", 2, 2, 2);
}

TEST(ParallelModelTest, SixtyFourExperts) {
  ExpectMatchesOneRank("tiny-v3-e64", 4, 4, 1);
  ExpectMatchesOneRank("tiny-v3-e64", 8, 8, 1);
  ExpectMatchesOneRank("tiny-v3-e64", 2, 2, 2);
}

// DP attention: one sequence lives on one rank (the others have no rows and only serve their
// experts); the batch-invariant kernels keep every row's result the single rank's.
TEST(ParallelModelTest, DataParallelAttention) {
  ExpectMatchesOneRank("tiny-v3", 2, 2, 1, true);
  ExpectMatchesOneRank("tiny-v3-e64", 4, 4, 1, true);
}

TEST(ParallelModelTest, BadSplitsAreRefusedNamingTheFlag) {
  const std::string& dir = PresetDir("tiny-v3");
  parallel::InProcessGroup group(3);
  kernels::cpu::CpuOps ops(1);
  ParallelConfig p;
  p.ep_size = 3;
  p.comm = &group.rank(0);
  auto model = DeepseekModel::Load(dir, ops, false, p);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("--ep-size 3 must divide the 16 routed experts"),
            std::string::npos)
      << model.status();
  p.ep_size = 1;
  p.tp_size = 3;
  model = DeepseekModel::Load(dir, ops, false, p);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("--tp-size 3 must divide the 8 attention heads"),
            std::string::npos)
      << model.status();
  p.tp_size = 2;
  model = DeepseekModel::Load(dir, ops, false, p);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("must each be 1 or the number of ranks (3)"),
            std::string::npos)
      << model.status();
  p.tp_size = 1;
  p.comm = nullptr;
  p.dp_attention = true;
  model = DeepseekModel::Load(dir, ops, false, p);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("--dp-attention needs --ep-size > 1"),
            std::string::npos)
      << model.status();
}

}  // namespace
}  // namespace dserve::models
