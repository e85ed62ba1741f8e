#include "tests/engine/engine_test_support.h"

#include "tests/support/test_env.h"

namespace dserve::engine::testing {

models::DeepseekModel& MicroModel() {
  static kernels::cpu::CpuOps* ops = new kernels::cpu::CpuOps(2);
  static models::DeepseekModel* model = [] {
    auto loaded = models::DeepseekModel::Load(dserve::testing::TestdataPath("micro-v3"), *ops,
                                              /*show_progress=*/false);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *model;
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int64_t length) {
  // Ids past the special tokens at the start of the vocabulary.
  std::uniform_int_distribution<int32_t> id(3, 2047);
  std::vector<int32_t> p(length);
  for (int32_t& t : p) t = id(rng);
  return p;
}

EngineConfig SmallConfig() {
  EngineConfig c;
  c.page_size = 16;
  c.num_pages = 512;
  c.scheduler.max_batched_tokens = 128;
  c.scheduler.max_num_seqs = 64;
  return c;
}

Request Greedy(std::vector<int32_t> prompt, int max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.logprobs = 0;  // the chosen token's logprob: lets tests compare logits bit for bit
  r.detokenize = false;
  return r;
}

std::vector<Result> RunAll(const EngineConfig& config, const std::vector<Request>& requests,
                           int stagger, int64_t* preemptions, KvCacheStats* kv_stats,
                           const Tokenizer* tokenizer,
                           EngineStats* engine_stats) {
  auto created = EngineCore::Create(MicroModel(), tokenizer, config);
  EXPECT_TRUE(created.ok()) << created.status();
  EngineCore& core = **created;
  std::vector<Result> results(requests.size());
  size_t added = 0;
  int64_t step = 0;
  auto add = [&] {
    const absl::Status s = core.Add(static_cast<RequestId>(added), requests[added]);
    EXPECT_TRUE(s.ok()) << s;
    ++added;
  };
  if (stagger == 0) {
    while (added < requests.size()) add();
  }
  std::vector<RequestOutput> outputs;
  while (added < requests.size() || core.HasWork()) {
    if (stagger > 0 && added < requests.size() && step % stagger == 0) add();
    outputs.clear();
    const absl::Status s = core.Step(&outputs);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    ++step;
    const absl::Status inv = core.kv().CheckInvariants();
    EXPECT_TRUE(inv.ok()) << "after step " << step << ": " << inv;
    if (!inv.ok()) break;
    for (const RequestOutput& o : outputs) {
      Result& r = results[o.request];
      auto& toks = r.tokens[o.index];
      toks.insert(toks.end(), o.tokens.begin(), o.tokens.end());
      r.logprob_entries += static_cast<int64_t>(o.logprobs.size());
      for (const SampledToken& s : o.logprobs) {
        r.logprobs[o.index].push_back(s.logprob);
        for (const TokenLogprob& t : s.top) r.logprobs[o.index].push_back(t.logprob);
      }
      if (o.index == 0) r.text += o.text;
      if (o.finish != FinishReason::kNone) r.finish[o.index] = o.finish;
      if (o.request_finished) {
        EXPECT_FALSE(r.finished) << "request " << o.request << " finished twice";
        r.finished = true;
        r.usage = o.usage;
      }
    }
    EXPECT_LT(step, 100000) << "the engine does not finish";
    if (step >= 100000) break;
  }
  EXPECT_EQ(core.kv().num_used_pages(), 0) << "pages still in use after every request ended";
  EXPECT_EQ(core.kv().num_free_pages() + core.kv().num_cached_pages(), core.num_pages());
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_TRUE(results[i].finished) << "request " << i << " never finished";
  }
  if (preemptions) *preemptions = core.total_preemptions();
  if (kv_stats) *kv_stats = core.kv().stats();
  if (engine_stats) *engine_stats = core.stats();
  return results;
}

std::vector<Result> RunEachAlone(const EngineConfig& config, const std::vector<Request>& requests,
                                 const Tokenizer* tokenizer) {
  std::vector<Result> out;
  for (const Request& r : requests) {
    out.push_back(RunAll(config, {r}, 0, nullptr, nullptr, tokenizer)[0]);
  }
  return out;
}

}  // namespace dserve::engine::testing
