// The whole model on the GPU against the CPU backend: generated checkpoints (tiny-v3 FP8 with
// MTP, tiny-v2 BF16 without q_lora, small-v3 at V3's attention dimensions with 64 experts, FP8),
// one ragged batch of two prefills, then a step of decode rows (s_q = 1 and 2), then the MTP
// module over the prompt. GemmMode::kExact must agree with the CPU to F32 rounding;
// kTensorCores (FP8 activations, BF16 products) within what FP8 rounding allows. Then the
// engine itself on the GPU (device cache, copy-on-write forks, prefix hits, MTP drafts) gives
// the CPU engine's greedy tokens. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/engine_core.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_memory.h"
#include "models/deepseek_model.h"
#include "models/model_generator.h"
#include "tests/gpu/gpu_compare.h"
#include "tests/support/generated_model.h"

namespace dserve::kernels::cuda {
namespace {

using models::DeepseekModel;

// Generated once per test binary (small-v3 is 2.6 GB: a few seconds on the device machine).
const std::string& PresetDir(const std::string& preset) {
  return dserve::testing::GeneratedModelDir(preset, 11);
}

struct Tolerance {
  double rel;          // max |gpu - cpu| / max |cpu| over a step's logits
  double mean_cosine;  // mean over rows of each row's cosine similarity
};

// One step's inputs, shared by both backends.
struct StepInput {
  std::vector<int32_t> tokens, positions, rows;
  std::vector<SequenceSlice> slices;
};

// A model on one backend with its own cache; every step's logits come back to the host.
struct Side {
  std::unique_ptr<DeepseekModel> model;
  LatentCache cache;
  models::ForwardOutput out;

  absl::Status Load(const std::string& dir, Ops& ops, DType cache_dtype) {
    DSERVE_ASSIGN_OR_RETURN(model, DeepseekModel::Load(dir, ops, false));
    LatentCacheShape shape = model->CacheShape(8, 64);
    shape.dtype = cache_dtype;
    DSERVE_ASSIGN_OR_RETURN(cache, ops.NewLatentCache(shape));
    return absl::OkStatus();
  }
  absl::Status Run(const StepInput& s) {
    models::ForwardInput in;
    in.tokens = s.tokens;
    in.batch.positions = s.positions;
    in.batch.sequences = s.slices;
    in.logit_rows = s.rows;
    return model->Forward(in, cache, &out);
  }
};

// Sequence A: 40 prompt tokens on pages {3, 0}; B: 21 tokens on pages {5, 1}.
const std::vector<int32_t> kPagesA = {3, 0}, kPagesB = {5, 1};

StepInput Prefill(std::mt19937& rng, int32_t vocab) {
  StepInput s;
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  for (int i = 0; i < 61; ++i) s.tokens.push_back(token(rng));
  for (int i = 0; i < 40; ++i) s.positions.push_back(i);
  for (int i = 0; i < 21; ++i) s.positions.push_back(i);
  s.rows.resize(61);
  std::iota(s.rows.begin(), s.rows.end(), 0);
  s.slices = {{0, 40, 0, kPagesA}, {40, 21, 0, kPagesB}};
  return s;
}

// A decodes one token, B verifies two (an MTP-style s_q = 2 step).
StepInput Decode(std::mt19937& rng, int32_t vocab) {
  StepInput s;
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  s.tokens = {token(rng), token(rng), token(rng)};
  s.positions = {40, 21, 22};
  s.rows = {0, 1, 2};
  s.slices = {{0, 1, 40, kPagesA}, {1, 2, 21, kPagesB}};
  return s;
}

void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, int64_t vocab,
                 const Tolerance& tol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  const dserve::testing::Agreement a =
      dserve::testing::Compare(gpu.data(), cpu.data(), static_cast<int64_t>(cpu.size()));
  const int64_t rows = static_cast<int64_t>(cpu.size()) / vocab;
  double sum = 0, worst = 1;
  int64_t same_argmax = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gpu.data() + r * vocab;
    const float* c = cpu.data() + r * vocab;
    const double cos = dserve::testing::Compare(g, c, vocab).cosine;
    sum += cos;
    worst = std::min(worst, cos);
    same_argmax += std::max_element(g, g + vocab) - g == std::max_element(c, c + vocab) - c;
  }
  std::printf("%-44s rel %.3g, row cosine mean %.6f min %.6f, argmax %lld/%lld\n", what.c_str(),
              a.rel, sum / rows, worst, static_cast<long long>(same_argmax),
              static_cast<long long>(rows));
  EXPECT_EQ(a.non_finite, 0) << what;
  EXPECT_LE(a.rel, tol.rel) << what;
  EXPECT_GE(sum / rows, tol.mean_cosine) << what;
}

struct Case {
  std::string preset;
  GemmMode gemm;
  DType cache;
  Tolerance tol;
};

class GpuModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(GpuModelTest, LogitsMatchTheCpu) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }
  const Case& c = GetParam();
  const std::string& dir = PresetDir(c.preset);
  cpu::CpuOps cpu_ops(0);
  auto gpu_ops = CudaOps::Create({0, c.gemm});
  ASSERT_TRUE(gpu_ops.ok()) << gpu_ops.status();
  Side cpu, gpu;
  ASSERT_TRUE(cpu.Load(dir, cpu_ops, c.cache).ok());
  const absl::Status loaded = gpu.Load(dir, **gpu_ops, c.cache);
  ASSERT_TRUE(loaded.ok()) << loaded;
  ASSERT_EQ(gpu.cache.storage().device(), Device::kCuda);
  const int32_t vocab = static_cast<int32_t>(cpu.model->config().vocab_size);

  std::mt19937 rng(3);
  const StepInput prefill = Prefill(rng, vocab);
  ASSERT_TRUE(cpu.Run(prefill).ok());
  const absl::Status ran = gpu.Run(prefill);
  ASSERT_TRUE(ran.ok()) << ran;
  ExpectClose(gpu.out.logits, cpu.out.logits, vocab, c.tol, c.preset + " prefill (61 rows)");

  const StepInput decode = Decode(rng, vocab);
  ASSERT_TRUE(cpu.Run(decode).ok());
  ASSERT_TRUE(gpu.Run(decode).ok());
  ExpectClose(gpu.out.logits, cpu.out.logits, vocab, c.tol, c.preset + " decode (s_q 1 and 2)");

  if (!cpu.model->has_mtp()) return;
  // The MTP module over A's prompt, fed each backend's own hidden states of the decode step
  // would mix errors; over the prefill of a third sequence instead (pages 2, 4).
  const std::vector<int32_t> pages = {2, 4};
  std::vector<int32_t> prompt(prefill.tokens.begin(), prefill.tokens.begin() + 40);
  StepInput third;
  third.tokens = prompt;
  third.positions.resize(40);
  std::iota(third.positions.begin(), third.positions.end(), 0);
  third.rows = third.positions;
  third.slices = {{0, 40, 0, pages}};
  ASSERT_TRUE(cpu.Run(third).ok());
  ASSERT_TRUE(gpu.Run(third).ok());
  std::vector<float> cpu_mtp, gpu_mtp;
  ASSERT_TRUE(cpu.model
                  ->ForwardMtpOverPrompt(prompt, cpu.out.hidden, pages, MlaMode::kAuto, cpu.cache,
                                         &cpu_mtp)
                  .ok());
  const absl::Status mtp = gpu.model->ForwardMtpOverPrompt(prompt, gpu.out.hidden, pages,
                                                           MlaMode::kAuto, gpu.cache, &gpu_mtp);
  ASSERT_TRUE(mtp.ok()) << mtp;
  ExpectClose(gpu_mtp, cpu_mtp, vocab, c.tol, c.preset + " MTP over a prompt");
}

// Exact with an F32 cache: the same F32 arithmetic in another order through 2-4 layers; 1e-3 of
// the largest logit is the tolerance the CPU backend meets against float64 (tests/models), so
// agreement within it says both compute the same function. With BF16/FP8 caches a stored value
// may round the other way where the F32 values before rounding differ in their last bits; on
// these random-weight models one such flip can move a chaotic row a lot (tests/models: a BF16
// instead of an F32 cache moves tiny-v3's worst row to cosine 0.92 while the mean stays
// 0.999), so the mean row cosine is the criterion there, and the worst error is bounded only
// loosely. Tensor cores: activations rounded to E4M3 (up to 2^-4, ~2.5% rms per element) at
// every FP8 projection, BF16 elsewhere and in the MLA products: the bounds are estimates, not
// yet measured on a GPU (its first run calibrates them); any wrong layout (scales transposed,
// a head or expert missed) gives mean cosines far below them.
INSTANTIATE_TEST_SUITE_P(
    Presets, GpuModelTest,
    ::testing::Values(Case{"tiny-v3", GemmMode::kExact, DType::kF32, {1e-3, 0.99999}},
                      Case{"tiny-v3", GemmMode::kExact, DType::kBF16, {0.5, 0.999}},
                      Case{"tiny-v3", GemmMode::kExact, DType::kF8E4M3, {0.5, 0.999}},
                      Case{"tiny-v2", GemmMode::kExact, DType::kF32, {1e-3, 0.99999}},
                      Case{"tiny-v2", GemmMode::kTensorCores, DType::kBF16, {1.0, 0.98}},
                      Case{"tiny-v2", GemmMode::kTensorCores, DType::kF8E4M3, {1.0, 0.97}},
                      Case{"small-v3", GemmMode::kExact, DType::kF32, {1e-3, 0.99999}},
                      Case{"small-v3", GemmMode::kTensorCores, DType::kBF16, {1.0, 0.9}},
                      Case{"small-v3", GemmMode::kTensorCores, DType::kF8E4M3, {1.0, 0.9}}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = info.param.preset + (info.param.gemm == GemmMode::kExact ? "_exact"
                                                                                : "_tensor_cores");
      name += info.param.cache == DType::kF32    ? "_f32_cache"
              : info.param.cache == DType::kBF16 ? "_bf16_cache"
                                                 : "_fp8_cache";
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

// The engine on the GPU: greedy requests with a shared prefix (prefix-cache hits), n = 2
// (forks copy the shared partial page on the device) and two MTP drafts per step, against the
// same requests on the CPU. In exact mode the logits agree to ~1e-6, so the argmax differs only
// where two logits tie that closely (with 129,280 random logits: about one token in 10^4).
TEST(GpuEngineTest, GreedyTokensMatchTheCpuEngine) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }
  const std::string& dir = PresetDir("tiny-v3");
  cpu::CpuOps cpu_ops(0);
  auto gpu_ops = CudaOps::Create({0, GemmMode::kExact});
  ASSERT_TRUE(gpu_ops.ok()) << gpu_ops.status();
  auto cpu_model = DeepseekModel::Load(dir, cpu_ops, false);
  auto gpu_model = DeepseekModel::Load(dir, **gpu_ops, false);
  ASSERT_TRUE(cpu_model.ok() && gpu_model.ok());

  std::mt19937 rng(9);
  std::uniform_int_distribution<int32_t> token(0, 129279);
  std::vector<int32_t> shared(70);
  for (int32_t& t : shared) t = token(rng);
  std::vector<engine::Request> requests;
  for (int i = 0; i < 4; ++i) {
    engine::Request r;
    r.prompt = shared;
    for (int j = 0; j < 5 + 7 * i; ++j) r.prompt.push_back(token(rng));
    r.params.temperature = 0.0f;
    r.params.max_tokens = 12;
    r.params.ignore_eos = true;
    r.params.n = i == 1 ? 2 : 1;
    r.detokenize = false;
    requests.push_back(std::move(r));
  }
  engine::EngineConfig config;
  config.num_pages = 32;
  config.page_size = 16;
  config.kv_dtype = DType::kF32;
  config.num_speculative_tokens = 2;
  config.scheduler.max_batched_tokens = 64;  // chunked prefill
  config.scheduler.max_num_seqs = 8;

  auto run = [&](DeepseekModel& model) {
    std::map<std::pair<int, int>, std::vector<int32_t>> tokens;
    auto core = engine::EngineCore::Create(model, nullptr, config);
    EXPECT_TRUE(core.ok()) << core.status();
    if (!core.ok()) return tokens;
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_TRUE((*core)->Add(static_cast<engine::RequestId>(i), requests[i]).ok());
    }
    std::vector<engine::RequestOutput> outputs;
    while ((*core)->HasWork()) {
      outputs.clear();
      const absl::Status s = (*core)->Step(&outputs);
      EXPECT_TRUE(s.ok()) << s;
      if (!s.ok()) break;
      EXPECT_TRUE((*core)->kv().CheckInvariants().ok());
      for (const engine::RequestOutput& o : outputs) {
        auto& t = tokens[{static_cast<int>(o.request), o.index}];
        t.insert(t.end(), o.tokens.begin(), o.tokens.end());
      }
    }
    return tokens;
  };
  const auto want = run(**cpu_model);
  const auto got = run(**gpu_model);
  ASSERT_EQ(want.size(), 5u);  // four requests, one with two samples
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace dserve::kernels::cuda
