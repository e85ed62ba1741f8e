// The GPU gate against the CPU op on the same logits, for DeepSeek-V3's router (256 experts,
// sigmoid + bias, 8 groups / best 4 by their top-two sums, 8 per token, normalised, x2.5),
// DeepSeek-V2's (160 experts, softmax, 8 groups / best 3 by their best expert, 6 per token,
// x16), V2-Lite's (64 experts, softmax, greedy, 6) and tiny-v3's. The CPU op computes the
// logits through an identity router, so both start from the same numbers. Same experts for
// every token; weights to float rounding. Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/moe_route.h"
#include "tests/gpu/gpu_compare.h"

namespace dserve::kernels::cuda {
namespace {

struct Case {
  const char* name;
  RouterConfig config;
  bool bias;
};

RouterConfig Config(int experts, int top_k, int groups, int topk_group, ScoringFunc scoring,
                    TopkMethod method, bool norm, float scale, bool scale_only_unnormalized) {
  RouterConfig c;
  c.num_experts = experts;
  c.top_k = top_k;
  c.n_group = groups;
  c.topk_group = topk_group;
  c.scoring = scoring;
  c.method = method;
  c.norm_topk_prob = norm;
  c.routed_scaling_factor = scale;
  c.scale_only_unnormalized = scale_only_unnormalized;
  return c;
}

TEST(CudaMoeRouteTest, SameExpertsAndWeightsAsTheCpuGate) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  const std::vector<Case> cases = {
      {"V3", Config(256, 8, 8, 4, ScoringFunc::kSigmoid, TopkMethod::kNoauxTc, true, 2.5f, false),
       true},
      {"V2", Config(160, 6, 8, 3, ScoringFunc::kSoftmax, TopkMethod::kGroupLimitedGreedy, false,
                    16.0f, true),
       false},
      {"V2-Lite", Config(64, 6, 1, 1, ScoringFunc::kSoftmax, TopkMethod::kGreedy, false, 1.0f, true),
       false},
      {"tiny-v3", Config(16, 4, 4, 2, ScoringFunc::kSigmoid, TopkMethod::kNoauxTc, true, 2.5f, false),
       true},
  };
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t T = 300;
  cpu::CpuOps cpu(1);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const int E = c.config.num_experts, K = c.config.top_k;
    Tensor logits = Tensor::Zeros(DType::kF32, {T, E});
    for (int64_t i = 0; i < T * E; ++i) logits.data<float>()[i] = normal(rng);
    Tensor bias = c.bias ? Tensor::Zeros(DType::kF32, {E}) : Tensor();
    if (c.bias) {
      for (int e = 0; e < E; ++e) bias.data<float>()[e] = 0.05f * normal(rng);
    }
    std::vector<float> identity(E * E, 0.0f);
    for (int e = 0; e < E; ++e) identity[e * E + e] = 1.0f;
    Weight router;
    router.dtype = DType::kF32;
    router.rows = E;
    router.cols = E;
    router.data = identity.data();
    Tensor want_ids = Tensor::Zeros(DType::kI32, {T, K}), want_w = Tensor::Zeros(DType::kF32, {T, K});
    cpu.MoeRoute(logits, router, bias, c.config, want_ids, want_w);

    absl::StatusOr<Tensor> dlogits = Upload(logits);
    ASSERT_TRUE(dlogits.ok()) << dlogits.status();
    Tensor dbias;
    if (c.bias) {
      absl::StatusOr<Tensor> b = Upload(bias);
      ASSERT_TRUE(b.ok()) << b.status();
      dbias = *b;
    }
    absl::StatusOr<Tensor> dids = DeviceTensor(DType::kI32, {T, K});
    absl::StatusOr<Tensor> dw = DeviceTensor(DType::kF32, {T, K});
    ASSERT_TRUE(dids.ok() && dw.ok());
    ASSERT_TRUE(FillDevice(dids->raw(), 0xFF, dids->bytes()).ok());
    ASSERT_TRUE(FillDevice(dw->raw(), 0xFF, dw->bytes()).ok());
    ASSERT_EQ(LaunchMoeRoute(dlogits->data<float>(), c.bias ? dbias.data<float>() : nullptr,
                             c.config, T, dids->data<int32_t>(), dw->data<float>(), nullptr),
              cudaSuccess);
    ASSERT_TRUE(Synchronize().ok());
    absl::StatusOr<Tensor> got_ids = Download(*dids), got_w = Download(*dw);
    ASSERT_TRUE(got_ids.ok() && got_w.ok());
    EXPECT_EQ(std::memcmp(got_ids->raw(), want_ids.raw(), want_ids.bytes()), 0)
        << "the GPU chose other experts";
    dserve::testing::ExpectAgree(got_w->data<float>(), want_w.data<float>(), T * K, 1e-5, 1e-5,
                                 0.9999999, "routing weights");
  }
}

TEST(CudaMoeRouteTest, RefusesConfigsItCannotRoute) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  RouterConfig c;
  c.num_experts = 2048;  // beyond the kernel's 1024
  c.top_k = 8;
  EXPECT_EQ(LaunchMoeRoute(nullptr, nullptr, c, 1, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
  c.num_experts = 256;
  c.n_group = 7;  // does not divide 256
  EXPECT_EQ(LaunchMoeRoute(nullptr, nullptr, c, 1, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace dserve::kernels::cuda
