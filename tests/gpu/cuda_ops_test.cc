// CudaOps, the Ops interface on the GPU, against CpuOps on the same inputs: every op the model
// calls, through the Ops API (device weights from PlaceWeight, activations from Empty, host
// spans for ids, rows, positions and block tables), in both GEMM modes. Exact mode must agree
// to F32 rounding; the tensor-core mode within the rounding of its E4M3 / BF16 activations.
// Outputs are poisoned with NaN first, so an element never written fails. Here: Linear,
// embedding, norms and elementwise ops, row moves, the MoE gate and the expert counter, and how
// an out-of-memory error stops the ops until TakeError(); the MoE experts, the latent cache and
// MLA are in cuda_ops_moe_mla_test.cc. Skipped, with a message, without a GPU.
#include "tests/gpu/cuda_ops_fixture.h"

namespace dserve::kernels::cuda {
namespace {

TEST(CudaOpsCreateTest, FailsWithAReasonExactlyWhenNoDeviceIsVisible) {
  const absl::Status available = DeviceAvailable();
  absl::StatusOr<std::unique_ptr<CudaOps>> ops =
      CudaOps::Create({.device = 0, .gemm = GemmMode::kExact});
  EXPECT_EQ(ops.ok(), available.ok()) << ops.status();
  if (!ops.ok()) {
    EXPECT_FALSE(ops.status().message().empty());
    return;
  }
  EXPECT_EQ((*ops)->name(), "cuda");
  EXPECT_EQ((*ops)->device(), Device::kCuda);
  const absl::StatusOr<std::unique_ptr<CudaOps>> missing =
      CudaOps::Create({.device = DeviceCount(), .gemm = GemmMode::kExact});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument) << missing.status();
}

TEST_F(CudaOpsTest, LinearExactMatchesCpuForEveryWeightDtype) {
  std::mt19937 rng(101);
  for (const DType dtype : {DType::kF8E4M3, DType::kBF16, DType::kF16, DType::kF32}) {
    for (const int64_t n : {1, 65, 200}) {
      for (const int64_t k : {7, 130, 512}) {
        const PlacedWeight w =
            Place(*exact_, RandomWeight(dtype, n, k, 1.0f / std::sqrt(static_cast<float>(k)), rng));
        for (const int64_t m : {1, 3, 37, 300}) {
          const std::string what =
              absl::StrCat("Linear ", TypeName(dtype), " ", ShapeName(m, n, k));
          SCOPED_TRACE(what);
          const Tensor x = RandomTensor({m, k}, rng);
          const Tensor want = CpuLinear(x, w.host.w);
          const std::vector<float> got = GpuLinear(*exact_, x, w.device);
          ExpectWithinSumBound(got, want, AbsProductSums(x, w.host), kExactRel, what);
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, LinearTensorCoresFp8IsWithinE4m3ActivationRounding) {
  std::mt19937 rng(202);
  for (const int64_t n : {256, 2112}) {  // 2112: V3's q_a + kv_a rows, a partial 128-row block
    for (const int64_t k : {512, 1536, 2048}) {
      const PlacedWeight w =
          Place(*tensor_cores_,
                RandomWeight(DType::kF8E4M3, n, k, 1.0f / std::sqrt(static_cast<float>(k)), rng));
      for (const int64_t m : {1, 4, 5, 64, 130}) {  // 1, 5, 130: padded to a multiple of 4
        const std::string what = absl::StrCat("FP8 tensor cores ", ShapeName(m, n, k));
        SCOPED_TRACE(what);
        const Tensor x = GroupScaledActivations(m, k, rng);
        const Tensor want = CpuLinear(x, w.host.w);
        const std::vector<float> got = GpuLinear(*tensor_cores_, x, w.device);
        EXPECT_EQ(NonBf16Count(got), 0) << "the shape qualifies: the product should be cuBLASLt's";
        ExpectAgree(got.data(), want.data<float>(), m * n, kNoAbs, kFp8Rel, kFp8Cosine, what);

        // Controls: references that are wrong in ways a kernel could be must fail the bounds.
        Tensor other = Tensor::Zeros(DType::kF32, {m, n});
        cpu_.Linear(GroupScaledActivations(m, k, rng), w.host.w, other);
        EXPECT_FALSE(Passes(Compare(got.data(), other.data<float>(), m * n), kFp8Rel, kFp8Cosine))
            << "other activations pass the bounds";
        Tensor dropped_x = CopyOf(x);
        for (int64_t t = 0; t < m; ++t) std::fill_n(dropped_x.data<float>() + t * k, 128, 0.0f);
        Tensor dropped = Tensor::Zeros(DType::kF32, {m, n});
        cpu_.Linear(dropped_x, w.host.w, dropped);
        EXPECT_FALSE(Passes(Compare(got.data(), dropped.data<float>(), m * n), kFp8Rel, kFp8Cosine))
            << "a product without its first 128 columns passes the bounds";
      }
    }
  }
}

TEST_F(CudaOpsTest, LinearTensorCoresBf16IsWithinBf16Rounding) {
  std::mt19937 rng(203);
  for (const int64_t n : {200, 256}) {
    for (const int64_t k : {512, 520}) {  // 520: a multiple of 8 but not of 128
      const PlacedWeight w =
          Place(*tensor_cores_,
                RandomWeight(DType::kBF16, n, k, 1.0f / std::sqrt(static_cast<float>(k)), rng));
      for (const int64_t m : {1, 5, 64}) {
        const std::string what = absl::StrCat("BF16 tensor cores ", ShapeName(m, n, k));
        SCOPED_TRACE(what);
        const Tensor x = RandomTensor({m, k}, rng);
        const Tensor want = CpuLinear(x, w.host.w);
        const std::vector<float> got = GpuLinear(*tensor_cores_, x, w.device);
        // cuBLASLt writes F32 here, but from BF16-rounded activations (2^-9 relative): further
        // from the CPU than the exact kernel's F32 rounding, which shows which path ran.
        EXPECT_GT(Compare(got.data(), want.data<float>(), m * n).rel, 1e-5)
            << "the shape qualifies: the product should be cuBLASLt's";
        ExpectAgree(got.data(), want.data<float>(), m * n, kNoAbs, kBf16Rel, kBf16Cosine, what);
        Tensor other = Tensor::Zeros(DType::kF32, {m, n});
        cpu_.Linear(RandomTensor({m, k}, rng), w.host.w, other);
        EXPECT_FALSE(Passes(Compare(got.data(), other.data<float>(), m * n), kBf16Rel, kBf16Cosine))
            << "other activations pass the bounds";
      }
    }
  }
}

TEST_F(CudaOpsTest, LinearTensorCoresFallsBackToTheExactKernelForOtherShapes) {
  // FP8: k not a multiple of 512 (384, 130) or n not of 8 (65); BF16: k or n not of 8.
  struct Case {
    DType dtype;
    int64_t n, k;
  };
  const std::vector<Case> cases = {{DType::kF8E4M3, 256, 384},
                                   {DType::kF8E4M3, 65, 512},
                                   {DType::kF8E4M3, 200, 130},
                                   {DType::kBF16, 200, 130},
                                   {DType::kBF16, 65, 512}};
  std::mt19937 rng(204);
  for (const Case& c : cases) {
    const PlacedWeight w =
        Place(*tensor_cores_,
              RandomWeight(c.dtype, c.n, c.k, 1.0f / std::sqrt(static_cast<float>(c.k)), rng));
    for (const int64_t m : {1, 37}) {
      const std::string what =
          absl::StrCat("fallback ", TypeName(c.dtype), " ", ShapeName(m, c.n, c.k));
      SCOPED_TRACE(what);
      const Tensor x = RandomTensor({m, c.k}, rng);
      const Tensor want = CpuLinear(x, w.host.w);
      const std::vector<float> got = GpuLinear(*tensor_cores_, x, w.device);
      EXPECT_GT(NonBf16Count(got), 0) << "F32 outputs expected from the exact kernel";
      ExpectWithinSumBound(got, want, AbsProductSums(x, w.host), kExactRel, what);
    }
  }
}

TEST_F(CudaOpsTest, EmbeddingReadsBf16AndF32Tables) {
  std::mt19937 rng(301);
  const std::vector<int32_t> ids = {0, 499, 17, 17, 256, 3, 498};  // repeats, both ends
  const int64_t vocab = 500, cols = 300, rows = static_cast<int64_t>(ids.size());
  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(TypeName(dtype));
    const PlacedWeight table = Place(*exact_, RandomWeight(dtype, vocab, cols, 1.0f, rng));
    Tensor want = Tensor::Zeros(DType::kF32, {rows, cols});
    cpu_.Embedding(table.host.w, ids, want);
    Tensor out = Poisoned(*exact_, DType::kF32, {rows, cols});
    exact_->Embedding(table.device, ids, out);
    DSERVE_ASSERT_OPS_OK(*exact_);
    const std::vector<float> got = Read<float>(*exact_, out);
    // Widening BF16 or copying F32 is exact.
    ExpectAgree(got.data(), want.data<float>(), want.numel(), 0.0, 0.0, 0.9999999, "Embedding");
  }
}

TEST_F(CudaOpsTest, NormsAndElementwiseOpsMatchCpu) {
  std::mt19937 rng(302);
  constexpr float kEps = 1e-6f;
  // The row sums of squares run in another order, and rsqrtf is within 2 ulp: float rounding
  // (relative 2e-6 of the largest output, as the kernel tests allow).
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 7168}, {7, 100}, {33, 1536}}) {
    SCOPED_TRACE(absl::StrCat(rows, " x ", cols));
    const Tensor x = RandomTensor({rows, cols}, rng, 0.3f, 2.0f);
    const Tensor weight = RandomTensor({cols}, rng, 1.0f, 0.1f);
    const Tensor dweight = ToDevice(weight);
    Tensor want = Tensor::Zeros(DType::kF32, {rows, cols});
    cpu_.RmsNorm(x, weight, kEps, want);
    Tensor dx = ToDevice(x);
    Tensor out = Poisoned(*exact_, DType::kF32, {rows, cols});
    exact_->RmsNorm(dx, dweight, kEps, out);
    exact_->RmsNorm(dx, dweight, kEps, dx);  // out may be x
    DSERVE_ASSERT_OPS_OK(*exact_);
    std::vector<float> got = Read<float>(*exact_, out);
    ExpectAgree(got.data(), want.data<float>(), want.numel(), 1e-4, 2e-6, 0.999999, "RmsNorm");
    got = Read<float>(*exact_, dx);
    ExpectAgree(got.data(), want.data<float>(), want.numel(), 1e-4, 2e-6, 0.999999,
                "RmsNorm in place");

    // residual += delta (one F32 add: exact), then the norm of the new residual; out may be
    // delta.
    const Tensor delta = RandomTensor({rows, cols}, rng, 0.0f, 0.5f);
    Tensor residual = RandomTensor({rows, cols}, rng);
    Tensor dresidual = ToDevice(residual), dresidual2 = ToDevice(residual),
           ddelta = ToDevice(delta);
    cpu_.AddRmsNorm(residual, delta, weight, kEps, want);
    out = Poisoned(*exact_, DType::kF32, {rows, cols});
    exact_->AddRmsNorm(dresidual, ddelta, dweight, kEps, out);
    exact_->AddRmsNorm(dresidual2, ddelta, dweight, kEps, ddelta);
    DSERVE_ASSERT_OPS_OK(*exact_);
    got = Read<float>(*exact_, out);
    ExpectAgree(got.data(), want.data<float>(), want.numel(), 1e-4, 2e-6, 0.999999, "AddRmsNorm");
    got = Read<float>(*exact_, ddelta);
    ExpectAgree(got.data(), want.data<float>(), want.numel(), 1e-4, 2e-6, 0.999999,
                "AddRmsNorm into delta");
    for (const Tensor* r : {&dresidual, &dresidual2}) {
      got = Read<float>(*exact_, *r);
      ExpectAgree(got.data(), residual.data<float>(), residual.numel(), 0.0, 0.0, 0.9999999,
                  "AddRmsNorm residual");
    }
  }

  // silu(gate) * up: expf against std::exp, a few ulp apart.
  const Tensor gate = RandomTensor({3, 4099}, rng, 0.0f, 3.0f), up = RandomTensor({3, 4099}, rng);
  Tensor want = Tensor::Zeros(DType::kF32, {3, 4099});
  cpu_.SiluMul(gate, up, want);
  Tensor dgate = ToDevice(gate), dup = ToDevice(up);
  Tensor out = Poisoned(*exact_, DType::kF32, {3, 4099});
  exact_->SiluMul(dgate, dup, out);
  exact_->SiluMul(dgate, dup, dgate);  // out may be gate
  DSERVE_ASSERT_OPS_OK(*exact_);
  std::vector<float> got = Read<float>(*exact_, out);
  ExpectAgree(got.data(), want.data<float>(), want.numel(), 1e-5, 2e-6, 0.999999, "SiluMul");
  got = Read<float>(*exact_, dgate);
  ExpectAgree(got.data(), want.data<float>(), want.numel(), 1e-5, 2e-6, 0.999999,
              "SiluMul in place");

  // x += y: the same F32 additions, bit for bit.
  Tensor x = CopyOf(gate);
  cpu_.Add(x, up);
  Tensor dx = ToDevice(gate);
  exact_->Add(dx, dup);
  DSERVE_ASSERT_OPS_OK(*exact_);
  got = Read<float>(*exact_, dx);
  ExpectAgree(got.data(), x.data<float>(), x.numel(), 0.0, 0.0, 0.9999999, "Add");
}

TEST_F(CudaOpsTest, ConcatColumnsAndGatherRowsMoveExactly) {
  std::mt19937 rng(303);
  const Tensor a = RandomTensor({5, 7}, rng), b = RandomTensor({5, 300}, rng);
  Tensor want = Tensor::Zeros(DType::kF32, {5, 307});
  cpu_.ConcatColumns(a, b, want);
  Tensor out = Poisoned(*exact_, DType::kF32, {5, 307});
  const Tensor da = ToDevice(a), db = ToDevice(b);
  exact_->ConcatColumns(da, db, out);
  DSERVE_ASSERT_OPS_OK(*exact_);
  std::vector<float> got = Read<float>(*exact_, out);
  ExpectAgree(got.data(), want.data<float>(), want.numel(), 0.0, 0.0, 0.9999999, "ConcatColumns");

  // Rows out of order and repeated; then other rows of the same count (the backend keeps the
  // last row list on the device while it is unchanged: a changed one must be uploaded again);
  // then no rows at all.
  const Tensor x = RandomTensor({10, 129}, rng);
  const Tensor dx = ToDevice(x);
  const std::vector<std::vector<int32_t>> row_lists = {
      {4, 0, 4, 9, 2, 2, 7}, {9, 9, 1, 0, 3, 8, 5}, {4, 0, 4, 9, 2, 2, 7}, {}};
  for (const std::vector<int32_t>& rows : row_lists) {
    const int64_t n = static_cast<int64_t>(rows.size());
    SCOPED_TRACE(absl::StrCat(n, " rows starting at ", n > 0 ? rows[0] : -1));
    Tensor gathered = Poisoned(*exact_, DType::kF32, {n, 129});
    exact_->GatherRows(dx, rows, gathered);
    DSERVE_ASSERT_OPS_OK(*exact_);
    if (n == 0) continue;
    want = Tensor::Zeros(DType::kF32, {n, 129});
    cpu_.GatherRows(x, rows, want);
    got = Read<float>(*exact_, gathered);
    ExpectAgree(got.data(), want.data<float>(), want.numel(), 0.0, 0.0, 0.9999999, "GatherRows");
  }
}

// A 64-expert router choosing 6 per token.
RouterConfig Router64(ScoringFunc scoring, TopkMethod method, int n_group, int topk_group,
                      bool norm, float scale, bool scale_only_unnormalized) {
  return RouterConfig{
      64, 6, n_group, topk_group, scoring, method, norm, scale, scale_only_unnormalized};
}

// The device-side expert counter the metrics read once per step: the CPU's counts, added to
// what the counters held.
TEST_F(CudaOpsTest, CountExpertsMatchesTheHostCount) {
  std::mt19937 rng(505);
  std::uniform_int_distribution<int32_t> expert(0, 63);
  Tensor ids = Tensor::Zeros(DType::kI32, {300, 8});
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = expert(rng);
  Tensor want = Tensor::Zeros(DType::kI32, {64});
  for (int64_t e = 0; e < 64; ++e) want.data<uint32_t>()[e] = static_cast<uint32_t>(e * 1000);
  Tensor counts = ToDevice(want);
  cpu_.CountExperts(ids, want);
  exact_->CountExperts(ToDevice(ids), counts);
  DSERVE_ASSERT_OPS_OK(*exact_);
  const std::vector<uint32_t> got = Read<uint32_t>(*exact_, counts);
  for (int64_t e = 0; e < 64; ++e) EXPECT_EQ(got[e], want.data<uint32_t>()[e]) << "expert " << e;
}

TEST_F(CudaOpsTest, MoeRouteChoosesTheCpusExperts) {
  // Activations are multiples of 2^-8 (|x| <= 1) and router weights multiples of 2^-10
  // (|w| <= 1/4, exact in BF16): every product is a multiple of 2^-18 and every partial sum of
  // 128 of them is below 32, so the logits are exact in F32 whatever order either backend sums
  // in. Both gates then route from identical logits, and the experts must agree exactly (with
  // inexact logits a near-tie could flip on float rounding alone). Logits come out about
  // N(0, 0.9) on a grid of 4e-6: ties are rare, and both sides break them to the lower index.
  constexpr int64_t kHidden = 128;
  std::mt19937 rng(401);
  std::uniform_int_distribution<int> x_steps(-256, 256), w_steps(-256, 256);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    const char* name;
    RouterConfig config;
    bool bias;
  };
  // V3's gate (sigmoid + bias, 8 groups / best 4 by their top-two sums, normalised, x2.5) at
  // 64 experts, and V2-Lite's (softmax, greedy, unnormalised).
  const std::vector<Case> cases = {
      {"V3", Router64(ScoringFunc::kSigmoid, TopkMethod::kNoauxTc, 8, 4, true, 2.5f, false), true},
      {"V2-Lite", Router64(ScoringFunc::kSoftmax, TopkMethod::kGreedy, 1, 1, false, 1.0f, true),
       false}};
  for (const Case& c : cases) {
    const int E = c.config.num_experts, K = c.config.top_k;
    std::vector<float> router(E * kHidden);
    for (float& w : router) w = static_cast<float>(w_steps(rng)) / 1024.0f;
    Tensor bias, dbias;
    if (c.bias) {
      bias = Tensor::Zeros(DType::kF32, {E});
      for (int e = 0; e < E; ++e) bias.data<float>()[e] = 0.05f * normal(rng);
      dbias = ToDevice(bias);
    }
    for (const DType dtype : {DType::kBF16, DType::kF32}) {
      std::vector<uint8_t> bytes(router.size() * DTypeSize(dtype));
      for (size_t i = 0; i < router.size(); ++i) {
        if (dtype == DType::kBF16) {
          const uint16_t h = FloatToBf16(router[i]);
          std::memcpy(bytes.data() + 2 * i, &h, 2);
        } else {
          std::memcpy(bytes.data() + 4 * i, &router[i], 4);
        }
      }
      const PlacedWeight w =
          Place(*exact_, dserve::testing::MakeTestWeight(dtype, E, kHidden, std::move(bytes)));
      for (const int64_t T : {1, 64}) {
        Tensor x = Tensor::Zeros(DType::kF32, {T, kHidden});
        for (int64_t i = 0; i < x.numel(); ++i) {
          x.data<float>()[i] = static_cast<float>(x_steps(rng)) / 256.0f;
        }
        Tensor want_ids = Tensor::Zeros(DType::kI32, {T, K});
        Tensor want_weights = Tensor::Zeros(DType::kF32, {T, K});
        cpu_.MoeRoute(x, w.host.w, bias, c.config, want_ids, want_weights);
        const Tensor dx = ToDevice(x);
        // The gate's logits never take the tensor-core path: both modes route alike.
        for (CudaOps* ops : {exact_.get(), tensor_cores_.get()}) {
          SCOPED_TRACE(absl::StrCat(c.name, " router ", TypeName(dtype), ", ", T, " tokens, ",
                                    ops == exact_.get() ? "exact" : "tensor cores"));
          Tensor ids = Poisoned(*ops, DType::kI32, {T, K});
          Tensor weights = Poisoned(*ops, DType::kF32, {T, K});
          ops->MoeRoute(dx, w.device, dbias, c.config, ids, weights);
          DSERVE_ASSERT_OPS_OK(*ops);
          const std::vector<int32_t> got_ids = Read<int32_t>(*ops, ids);
          const std::vector<float> got_weights = Read<float>(*ops, weights);
          EXPECT_EQ(std::memcmp(got_ids.data(), want_ids.raw(), want_ids.bytes()), 0)
              << "the GPU chose other experts";
          // The same scores from the same logits up to expf's ulps, summed in the same order.
          ExpectAgree(got_weights.data(), want_weights.data<float>(), T * K, 1e-5, 1e-5, 0.9999999,
                      "routing weights");
        }
      }
    }
  }
}

// Experts with their host and device weights.
TEST_F(CudaOpsTest, OutOfMemoryStopsTheOpsUntilTakeError) {
  std::mt19937 rng(701);
  const Tensor x = RandomTensor({4, 64}, rng), y = RandomTensor({4, 64}, rng);
  Tensor dx = ToDevice(x), dy = ToDevice(y);
  const PlacedWeight w = Place(*exact_, RandomWeight(DType::kF32, 32, 64, 0.125f, rng));
  Tensor out = Poisoned(*exact_, DType::kF32, {4, 32});
  DSERVE_ASSERT_OPS_OK(*exact_);

  // 1 TiB of activations: more than any GPU has.
  constexpr int64_t kHuge = int64_t{1} << 38;
  const Tensor huge = exact_->Empty(DType::kF32, {kHuge});
  EXPECT_EQ(huge.raw(), nullptr) << "a failed allocation has no storage";
  exact_->Add(dx, dy);
  exact_->Linear(dx, w.device, out);
  const Tensor after = exact_->Empty(DType::kF32, {16});
  EXPECT_EQ(after.raw(), nullptr) << "nothing is allocated after an error";

  const absl::Status error = exact_->TakeError();
  EXPECT_EQ(error.code(), absl::StatusCode::kResourceExhausted) << error;
  EXPECT_NE(std::string(error.message()).find(std::to_string(kHuge * 4)), std::string::npos)
      << "the message should name the size: " << error;
  DSERVE_ASSERT_OPS_OK(*exact_);  // taken: the next call is OK again

  // The ops after the failure did nothing (read back outside the ops, which would have done
  // nothing either while the error stood).
  absl::StatusOr<Tensor> unchanged = Download(dx);
  ASSERT_TRUE(unchanged.ok()) << unchanged.status();
  ExpectAgree(unchanged->data<float>(), x.data<float>(), x.numel(), 0.0, 0.0, 0.9999999,
              "x after a skipped Add");
  absl::StatusOr<Tensor> untouched = Download(out);
  ASSERT_TRUE(untouched.ok()) << untouched.status();
  int64_t written = 0;
  for (int64_t i = 0; i < untouched->numel(); ++i) {
    written += !std::isnan(untouched->data<float>()[i]);
  }
  EXPECT_EQ(written, 0) << "a skipped Linear wrote its output";

  // And the ops work again.
  exact_->Add(dx, dy);
  Tensor sum = CopyOf(x);
  cpu_.Add(sum, y);
  DSERVE_ASSERT_OPS_OK(*exact_);
  const std::vector<float> got = Read<float>(*exact_, dx);
  ExpectAgree(got.data(), sum.data<float>(), sum.numel(), 0.0, 0.0, 0.9999999, "Add afterwards");
  const Tensor fresh = exact_->Empty(DType::kF32, {16});
  EXPECT_NE(fresh.raw(), nullptr);
  DSERVE_ASSERT_OPS_OK(*exact_);
}

}  // namespace
}  // namespace dserve::kernels::cuda
