// The engine driving a parallel model — rank 0 runs the scheduler and announces every step,
// the other ranks follow in threads (models::DeepseekModel::Follow) — gives the single-rank
// engine's tokens: tiny-v3 with EP 2, EP 4, TP 2 and EP 2 / 4 with DP attention, over chunked
// prefills, prefix-cache hits, n = 2 samples (their copy-on-write page copies must reach the
// followers' caches) and MTP drafts (the leader's hidden states go to the followers).
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/engine_core.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"
#include "parallel/in_process_communicator.h"
#include "tests/support/generated_model.h"

namespace dserve::engine {
namespace {

using Tokens = std::map<std::pair<int, int>, std::vector<int32_t>>;

std::vector<Request> Requests() {
  std::mt19937 rng(4);
  std::uniform_int_distribution<int32_t> token(0, 129279);
  std::vector<int32_t> shared(70);
  for (int32_t& t : shared) t = token(rng);
  std::vector<Request> requests;
  for (int i = 0; i < 5; ++i) {
    Request r;
    r.prompt = shared;  // pages of it are cached after the first: prefix hits
    for (int j = 0; j < 3 + 11 * i; ++j) r.prompt.push_back(token(rng));
    r.params.temperature = 0.0f;
    r.params.max_tokens = 9;
    r.params.ignore_eos = true;
    r.params.n = i == 2 ? 2 : 1;
    r.detokenize = false;
    requests.push_back(std::move(r));
  }
  // Prompts of their own: with DP attention they start on pages of their own and so spread
  // over the ranks (the ones above share their first page and live on one rank).
  for (int i = 0; i < 4; ++i) {
    Request r;
    for (int j = 0; j < 20 + 9 * i; ++j) r.prompt.push_back(token(rng));
    r.params.temperature = 0.0f;
    r.params.max_tokens = 7;
    r.params.ignore_eos = true;
    r.detokenize = false;
    requests.push_back(std::move(r));
  }
  return requests;
}

EngineConfig Config() {
  EngineConfig c;
  c.num_pages = 64;
  c.page_size = 16;
  c.num_speculative_tokens = 1;
  c.scheduler.max_batched_tokens = 48;  // prompts are chunked
  c.scheduler.max_num_seqs = 4;         // requests wait: later ones hit the prefix cache
  return c;
}

Tokens Drive(models::DeepseekModel& model) {
  Tokens tokens;
  auto core = EngineCore::Create(model, nullptr, Config());
  EXPECT_TRUE(core.ok()) << core.status();
  if (!core.ok()) return tokens;
  const std::vector<Request> requests = Requests();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_TRUE((*core)->Add(static_cast<RequestId>(i), requests[i]).ok());
  }
  std::vector<RequestOutput> outputs;
  while ((*core)->HasWork()) {
    outputs.clear();
    const absl::Status s = (*core)->Step(&outputs);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    for (const RequestOutput& o : outputs) {
      auto& t = tokens[{static_cast<int>(o.request), o.index}];
      t.insert(t.end(), o.tokens.begin(), o.tokens.end());
    }
  }
  EXPECT_GT((*core)->kv().stats().prefix_hit_tokens, 0);
  EXPECT_GT((*core)->kv().stats().cow_copies, 0);
  return tokens;
}

Tokens RunParallel(const std::string& dir, int world, int ep, int tp, bool dp) {
  parallel::InProcessGroup group(world);
  auto parallel_config = [&](int r) {
    models::ParallelConfig p;
    p.ep_size = ep;
    p.tp_size = tp;
    p.dp_attention = dp;
    p.comm = &group.rank(r);
    return p;
  };
  std::vector<absl::Status> follower_status(world);
  std::vector<std::thread> followers;
  for (int r = 1; r < world; ++r) {
    followers.emplace_back([&, r] {
      kernels::cpu::CpuOps ops(1);
      auto model = models::DeepseekModel::Load(dir, ops, false, parallel_config(r));
      follower_status[r] = model.ok() ? (*model)->Follow() : model.status();
    });
  }
  Tokens tokens;
  {
    kernels::cpu::CpuOps ops(1);
    auto model = models::DeepseekModel::Load(dir, ops, false, parallel_config(0));
    EXPECT_TRUE(model.ok()) << model.status();
    if (model.ok()) {
      tokens = Drive(**model);
      EXPECT_TRUE((*model)->StopFollowers().ok());
    }
  }
  for (std::thread& t : followers) t.join();
  for (int r = 1; r < world; ++r) EXPECT_TRUE(follower_status[r].ok()) << follower_status[r];
  return tokens;
}

TEST(ParallelEngineTest, LeaderAndFollowersGiveTheSingleRanksTokens) {
  const std::string& dir = dserve::testing::GeneratedModelDir("tiny-v3", 29);
  Tokens want;
  {
    kernels::cpu::CpuOps ops(1);
    auto model = models::DeepseekModel::Load(dir, ops, false);
    ASSERT_TRUE(model.ok()) << model.status();
    want = Drive(**model);
  }
  ASSERT_EQ(want.size(), 10u);  // nine requests, one with two samples
  struct Split {
    int world, ep, tp;
    bool dp;
  };
  // With DP attention the sequences spread over the ranks by their first page; prefix hits
  // and forks stay with the rank holding the shared pages.
  for (const Split s : {Split{2, 2, 1, false}, Split{4, 4, 1, false}, Split{2, 1, 2, false},
                        Split{2, 2, 1, true}, Split{4, 4, 1, true}}) {
    SCOPED_TRACE(absl::StrCat("EP ", s.ep, ", TP ", s.tp, s.dp ? ", DP attention" : ""));
    EXPECT_EQ(RunParallel(dir, s.world, s.ep, s.tp, s.dp), want);
  }
}

}  // namespace
}  // namespace dserve::engine
