// CudaOps against CpuOps, continued: the MoE experts (exact and tensor-core modes, uniform,
// skewed and empty routing), the latent cache's allocation and page copy, and the MLA cache
// write and attention (the F32 kernel and the tensor-core one). Skipped without a GPU.
#include "tests/gpu/cuda_ops_fixture.h"

namespace dserve::kernels::cuda {
namespace {

// A suite of its own: this file's copy of the fixture is another type than cuda_ops_test.cc's.
using CudaOpsMoeMlaTest = CudaOpsTest;

struct Experts {
  std::vector<PlacedWeight> storage;  // gate, up, down of each expert
  std::vector<MlpWeights> host, device;
};

Experts RandomExperts(CudaOps& ops, DType dtype, int count, int64_t hidden, int64_t inter,
                      std::mt19937& rng) {
  Experts experts;
  experts.storage.reserve(3 * count);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(hidden));
  const float out_scale = 1.0f / std::sqrt(static_cast<float>(inter));
  for (int e = 0; e < count; ++e) {
    experts.storage.push_back(Place(ops, RandomWeight(dtype, inter, hidden, in_scale, rng)));
    experts.storage.push_back(Place(ops, RandomWeight(dtype, inter, hidden, in_scale, rng)));
    experts.storage.push_back(Place(ops, RandomWeight(dtype, hidden, inter, out_scale, rng)));
  }
  for (int e = 0; e < count; ++e) {
    const PlacedWeight* w = experts.storage.data() + 3 * e;
    experts.host.push_back(MlpWeights{w[0].host.w, w[1].host.w, w[2].host.w});
    experts.device.push_back(MlpWeights{w[0].device, w[1].device, w[2].device});
  }
  return experts;
}

enum class Routing {
  kUniform,  // K distinct experts per token, drawn uniformly
  kSkewed,   // expert 3 first for 7 tokens in 8
  kSparse,   // only experts 2, 5, 6, 11 and 14: the others get no tokens
};
constexpr const char* kRoutingNames[] = {"uniform", "skewed", "sparse"};
const char* RoutingName(Routing r) { return kRoutingNames[static_cast<int>(r)]; }

// ids [T, K] with distinct experts per token (as a router gives them) and weights in
// [0.05, 1).
void RouteByHand(Routing routing, int64_t T, int K, int E, std::mt19937& rng, Tensor* ids,
                 Tensor* weights) {
  std::vector<int32_t> pool;
  if (routing == Routing::kSparse) {
    pool = {2, 5, 6, 11, 14};
  } else {
    pool.resize(E);
    std::iota(pool.begin(), pool.end(), 0);
  }
  DSERVE_CHECK(K <= static_cast<int>(pool.size())) << "top_k " << K;
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  *ids = Tensor::Zeros(DType::kI32, {T, K});
  *weights = Tensor::Zeros(DType::kF32, {T, K});
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(pool.begin(), pool.end(), rng);
    if (routing == Routing::kSkewed && t % 8 != 7) {
      std::iter_swap(pool.begin(), std::find(pool.begin(), pool.end(), 3));
    }
    for (int k = 0; k < K; ++k) {
      ids->data<int32_t>()[t * K + k] = pool[k];
      weights->data<float>()[t * K + k] = weight(rng);
    }
  }
}

TEST_F(CudaOpsMoeMlaTest, MoeExpertsExactMatchesCpu) {
  // Two chained products, SwiGLU and a weighted sum of up to 4 experts, all F32 in another
  // order: relative errors of a few 1e-7 of a typical output. rel 2e-5 of the largest output
  // leaves a wide margin and is far below a token missed, doubled or given another's weight.
  constexpr int kExperts = 16;
  constexpr int64_t kHidden = 256, kInter = 128;
  std::mt19937 rng(501);
  for (const DType dtype : {DType::kF8E4M3, DType::kBF16}) {
    const Experts experts = RandomExperts(*exact_, dtype, kExperts, kHidden, kInter, rng);
    for (const Routing routing : {Routing::kUniform, Routing::kSkewed, Routing::kSparse}) {
      for (const int K : {1, 4}) {
        for (const int64_t T : {1, 7, 64}) {
          const std::string what =
              absl::StrCat("MoeExperts ", TypeName(dtype), ", ", RoutingName(routing), ", top ", K,
                           ", ", T, " tokens");
          SCOPED_TRACE(what);
          const Tensor x = RandomTensor({T, kHidden}, rng);
          Tensor ids, weights;
          RouteByHand(routing, T, K, kExperts, rng, &ids, &weights);
          Tensor want = Tensor::Zeros(DType::kF32, {T, kHidden});
          cpu_.MoeExperts(x, experts.host, ids, weights, want);
          const Tensor dx = ToDevice(x), dids = ToDevice(ids), dweights = ToDevice(weights);
          Tensor out = Poisoned(*exact_, DType::kF32, {T, kHidden});
          exact_->MoeExperts(dx, experts.device, dids, dweights, out);
          DSERVE_ASSERT_OPS_OK(*exact_);
          const std::vector<float> got = Read<float>(*exact_, out);
          ExpectAgree(got.data(), want.data<float>(), want.numel(), kNoAbs, 2e-5, kExactCosine,
                      what);
        }
      }
    }
  }
}

TEST_F(CudaOpsMoeMlaTest, MoeExpertsTensorCoresAreWithinActivationRounding) {
  // Every expert product qualifies (hidden and intermediate 512). Two activations are rounded
  // per product chain: x before gate/up, and silu(gate) * up before down. The first error
  // passes through SwiGLU with a gain of about 1.4 (RMS over normal gate and up values), so
  // FP8 gives about sqrt((1.4 * 2.65%)^2 + 2.65%^2) = 4.5% RMS of a typical output: cosine
  // about 0.999, 0.995 allowed (10% RMS); the largest error about 5% of the largest output,
  // 12% allowed. BF16: four roundings of 0.17% RMS (x, gate and up, silu * up, the output):
  // about 0.4% RMS, cosine 0.999992; 0.9999 and 2% allowed.
  struct Mode {
    DType dtype;
    double rel, cosine;
  };
  constexpr int kExperts = 8, K = 4;
  constexpr int64_t kHidden = 512, kInter = 512;
  std::mt19937 rng(502);
  for (const Mode mode : {Mode{DType::kF8E4M3, 0.12, 0.995}, Mode{DType::kBF16, 2e-2, 0.9999}}) {
    const Experts experts =
        RandomExperts(*tensor_cores_, mode.dtype, kExperts, kHidden, kInter, rng);
    for (const Routing routing : {Routing::kUniform, Routing::kSkewed}) {
      // 1,100 tokens: CudaOps runs the grouped kernels in pieces of 1,024.
      for (const int64_t T : {7, 64, 1100}) {
        const std::string what = absl::StrCat("MoeExperts tensor cores ", TypeName(mode.dtype),
                                              ", ", RoutingName(routing), ", ", T, " tokens");
        SCOPED_TRACE(what);
        const Tensor x = RandomTensor({T, kHidden}, rng);
        Tensor ids, weights;
        RouteByHand(routing, T, K, kExperts, rng, &ids, &weights);
        Tensor want = Tensor::Zeros(DType::kF32, {T, kHidden});
        cpu_.MoeExperts(x, experts.host, ids, weights, want);
        const Tensor dx = ToDevice(x), dids = ToDevice(ids), dweights = ToDevice(weights);
        Tensor out = Poisoned(*tensor_cores_, DType::kF32, {T, kHidden});
        tensor_cores_->MoeExperts(dx, experts.device, dids, dweights, out);
        DSERVE_ASSERT_OPS_OK(*tensor_cores_);
        const std::vector<float> got = Read<float>(*tensor_cores_, out);
        ExpectAgree(got.data(), want.data<float>(), want.numel(), kNoAbs, mode.rel, mode.cosine,
                    what);
        Tensor other = Tensor::Zeros(DType::kF32, {T, kHidden});
        cpu_.MoeExperts(RandomTensor({T, kHidden}, rng), experts.host, ids, weights, other);
        EXPECT_FALSE(
            Passes(Compare(got.data(), other.data<float>(), want.numel()), mode.rel, mode.cosine))
            << "other activations pass the bounds";
      }
    }
  }
}

// The shared expert as one more grouped expert (tensor cores): the routed experts plus the
// shared one, within the tensor-core bounds above, of the CPU's MoE + separate MLP; leaving the
// shared expert out must fail them. Exact mode does not fuse (false): the caller adds it.
TEST_F(CudaOpsMoeMlaTest, MoeExpertsWithSharedRunsItAsOneMoreExpert) {
  struct Mode {
    DType dtype;
    double rel, cosine;
  };
  constexpr int kExperts = 8, K = 4;
  constexpr int64_t kHidden = 512, kInter = 512;
  std::mt19937 rng(503);
  for (const Mode mode : {Mode{DType::kF8E4M3, 0.12, 0.995}, Mode{DType::kBF16, 2e-2, 0.9999}}) {
    // Expert kExperts of this list is the shared one.
    const Experts experts =
        RandomExperts(*tensor_cores_, mode.dtype, kExperts + 1, kHidden, kInter, rng);
    const std::span<const MlpWeights> routed_host(experts.host.data(), kExperts);
    const std::span<const MlpWeights> routed_device(experts.device.data(), kExperts);
    for (const int64_t T : {1, 64, 1100}) {
      const std::string what = absl::StrCat("MoeExpertsWithShared ", TypeName(mode.dtype), ", ",
                                            T, " tokens");
      SCOPED_TRACE(what);
      const Tensor x = RandomTensor({T, kHidden}, rng);
      Tensor ids, weights;
      RouteByHand(Routing::kUniform, T, K, kExperts, rng, &ids, &weights);
      Tensor routed = Tensor::Zeros(DType::kF32, {T, kHidden});
      cpu_.MoeExperts(x, routed_host, ids, weights, routed);
      Tensor gate = Tensor::Zeros(DType::kF32, {T, kInter});
      Tensor up = Tensor::Zeros(DType::kF32, {T, kInter});
      Tensor shared_out = Tensor::Zeros(DType::kF32, {T, kHidden});
      cpu_.Linear(x, experts.host[kExperts].gate, gate);
      cpu_.Linear(x, experts.host[kExperts].up, up);
      cpu_.SiluMul(gate, up, gate);
      cpu_.Linear(gate, experts.host[kExperts].down, shared_out);
      Tensor want = Tensor::Zeros(DType::kF32, {T, kHidden});
      std::copy_n(routed.data<float>(), routed.numel(), want.data<float>());
      cpu_.Add(want, shared_out);

      const Tensor dx = ToDevice(x), dids = ToDevice(ids), dweights = ToDevice(weights);
      Tensor out = Poisoned(*tensor_cores_, DType::kF32, {T, kHidden});
      EXPECT_TRUE(tensor_cores_->MoeExpertsWithShared(dx, routed_device,
                                                      &experts.device[kExperts], dids, dweights,
                                                      out));
      DSERVE_ASSERT_OPS_OK(*tensor_cores_);
      const std::vector<float> got = Read<float>(*tensor_cores_, out);
      ExpectAgree(got.data(), want.data<float>(), want.numel(), kNoAbs, mode.rel, mode.cosine,
                  what);
      EXPECT_FALSE(Passes(Compare(got.data(), routed.data<float>(), want.numel()), mode.rel,
                          mode.cosine))
          << "the routed experts alone pass the bounds";

      Tensor exact_out = Poisoned(*exact_, DType::kF32, {T, kHidden});
      EXPECT_FALSE(exact_->MoeExpertsWithShared(dx, routed_device, &experts.device[kExperts],
                                                dids, dweights, exact_out))
          << "exact mode runs the shared expert apart";
      DSERVE_ASSERT_OPS_OK(*exact_);
    }
  }
}

TEST_F(CudaOpsMoeMlaTest, NewLatentCacheIsZeroedAndCopyCachePageCopiesEveryLayer) {
  std::mt19937 rng(601);
  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(TypeName(dtype));
    const LatentCacheShape shape{3, 128, 16, 16, 5, dtype};
    absl::StatusOr<LatentCache> made = exact_->NewLatentCache(shape);
    ASSERT_TRUE(made.ok()) << made.status();
    LatentCache cache = *std::move(made);
    const Tensor& storage = cache.storage();
    ASSERT_EQ(storage.device(), Device::kCuda);
    ASSERT_EQ(storage.bytes(), static_cast<size_t>(shape.num_pages * shape.page_bytes()));
    std::vector<uint8_t> got(storage.bytes());
    exact_->CopyToHost(storage, got.data());
    DSERVE_ASSERT_OPS_OK(*exact_);
    EXPECT_EQ(std::count(got.begin(), got.end(), 0), static_cast<std::ptrdiff_t>(got.size()))
        << "a new cache must be zero-filled";

    // Distinct bytes everywhere, then page 1 over page 3: page 3 of every layer must hold page
    // 1's bytes, and every other byte stay as it was.
    std::vector<uint8_t> pattern(storage.bytes());
    for (uint8_t& b : pattern) b = static_cast<uint8_t>(rng());
    ASSERT_TRUE(CopyToDevice(storage.raw(), pattern.data(), pattern.size()).ok());
    exact_->CopyCachePage(cache, 1, 3);
    DSERVE_ASSERT_OPS_OK(*exact_);
    std::vector<uint8_t> want = pattern;
    const size_t esize = DTypeSize(dtype);
    const size_t page_bytes = static_cast<size_t>(shape.page_size * shape.token_dim()) * esize;
    for (int layer = 0; layer < shape.num_layers; ++layer) {
      std::memcpy(want.data() + cache.Offset(layer, 3, 0) * esize,
                  pattern.data() + cache.Offset(layer, 1, 0) * esize, page_bytes);
    }
    exact_->CopyToHost(storage, got.data());
    DSERVE_ASSERT_OPS_OK(*exact_);
    int64_t wrong = 0;
    for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != want[i];
    EXPECT_EQ(wrong, 0) << "bytes differ from page 1 copied over page 3 in every layer";
  }
  const absl::StatusOr<LatentCache> f16 =
      exact_->NewLatentCache(LatentCacheShape{1, 128, 16, 16, 2, DType::kF16});
  EXPECT_EQ(f16.status().code(), absl::StatusCode::kInvalidArgument) << f16.status();
}

float CacheElement(const uint8_t* bytes, DType dtype, int64_t e) {
  if (dtype == DType::kBF16) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * e, 2);
    return Bf16ToFloat(h);
  }
  float v;
  std::memcpy(&v, bytes + 4 * e, 4);
  return v;
}

TEST_F(CudaOpsMoeMlaTest, MlaWriteCacheThenAttentionMatchCpu) {
  // tiny-v3's attention: 8 heads, nope 32, rope 16, v 32, kv_lora 128, FP8 kv_b [512, 128];
  // 16-token pages. A step of four sequences: decode after 40 tokens and after exactly one
  // page, a 37-token prefill, a 20-token chunk after 13 (crossing a page boundary).
  constexpr int kHeads = 8, kLayers = 2, kLayer = 1;  // layer 0 stays NaN: offsets must be right
  constexpr int64_t kNope = 32, kRope = 16, kV = 32, kKvLora = 128, kPage = 16, kPages = 16;
  constexpr int64_t kDim = kKvLora + kRope, kQk = kNope + kRope, kHalf = kRope / 2;
  constexpr int64_t kPositions = 64;
  constexpr float kEps = 1e-6f;
  struct Sequence {
    int64_t cached, tokens;
    std::vector<int32_t> table;  // scattered pages; 1, 6, 10, 14 and 15 belong to nobody
  };
  const std::vector<Sequence> sequences = {
      {40, 1, {9, 2, 5}}, {16, 1, {4, 12}}, {0, 37, {0, 11, 7}}, {13, 20, {3, 8, 13}}};
  AttentionBatch batch;
  std::vector<int32_t> positions;
  int64_t rows = 0;
  for (const Sequence& s : sequences) {
    batch.sequences.push_back({rows, s.tokens, s.cached, s.table, MlaMode::kAuto});
    for (int64_t i = 0; i < s.tokens; ++i) positions.push_back(static_cast<int32_t>(s.cached + i));
    rows += s.tokens;
  }
  batch.positions = positions;

  std::mt19937 rng(602);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.5f, 1.5f);
  // One table for the whole test: the backend keeps the last one it uploaded by address.
  std::vector<float> cos(kPositions * kHalf), sin(kPositions * kHalf);
  for (int64_t p = 0; p < kPositions; ++p) {
    for (int64_t i = 0; i < kHalf; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / kRope);
      cos[p * kHalf + i] = static_cast<float>(std::cos(angle) * 1.1);  // a YaRN-like mscale
      sin[p * kHalf + i] = static_cast<float>(std::sin(angle) * 1.1);
    }
  }
  const RopeTable rope{cos.data(), sin.data(), kPositions, kRope};
  const PlacedWeight kv_b =
      Place(*exact_, RandomWeight(DType::kF8E4M3, kHeads * (kNope + kV), kKvLora,
                                  1.2f / std::sqrt(static_cast<float>(kNope)), rng));

  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(absl::StrCat(TypeName(dtype), " cache"));
    const LatentCacheShape shape{kLayers, kKvLora, kRope, kPage, kPages, dtype};
    // The CPU cache: NaN everywhere but each sequence's cached tokens (random latents of
    // about RMS-normalised size); the device cache gets the same bytes.
    LatentCache cpu_cache(shape);
    std::memset(cpu_cache.storage().raw(), 0xFF, cpu_cache.storage().bytes());
    std::vector<float> token(kDim);
    for (const Sequence& s : sequences) {
      for (int64_t index = 0; index < s.cached; ++index) {
        for (float& v : token) v = uniform(rng);
        cpu_cache.WriteToken(kLayer, s.table, index, token.data());
      }
    }
    absl::StatusOr<LatentCache> made = exact_->NewLatentCache(shape);
    ASSERT_TRUE(made.ok()) << made.status();
    LatentCache gpu_cache = *std::move(made);
    const size_t cache_bytes = cpu_cache.storage().bytes();
    ASSERT_TRUE(
        CopyToDevice(gpu_cache.storage().raw(), cpu_cache.storage().raw(), cache_bytes).ok());

    // The step's latents into both caches.
    const Tensor kv_a = RandomTensor({rows, kDim}, rng);
    const Tensor kv_norm = RandomTensor({kKvLora}, rng, 1.0f, 0.1f);
    cpu_.MlaWriteCache(kv_a, kv_norm, kEps, rope, batch, cpu_cache, kLayer);
    const Tensor dkv_a = ToDevice(kv_a), dkv_norm = ToDevice(kv_norm);
    exact_->MlaWriteCache(dkv_a, dkv_norm, kEps, rope, batch, gpu_cache, kLayer);
    DSERVE_ASSERT_OPS_OK(*exact_);
    std::vector<uint8_t> got(cache_bytes);
    exact_->CopyToHost(gpu_cache.storage(), got.data());
    DSERVE_ASSERT_OPS_OK(*exact_);
    const uint8_t* want = static_cast<const uint8_t*>(cpu_cache.storage().raw());
    const int64_t elements = static_cast<int64_t>(cache_bytes / DTypeSize(dtype));
    std::vector<char> written(elements, 0);
    std::vector<float> got_rows, want_rows;
    for (const SequenceSlice& s : batch.sequences) {
      for (int64_t i = 0; i < s.num_tokens; ++i) {
        const int64_t index = s.cached_tokens + i;
        const int64_t slot = cpu_cache.Offset(kLayer, s.block_table[index / kPage], index % kPage);
        for (int64_t c = 0; c < kDim; ++c) {
          written[slot + c] = 1;
          got_rows.push_back(CacheElement(got.data(), dtype, slot + c));
          want_rows.push_back(CacheElement(want, dtype, slot + c));
        }
      }
    }
    // BF16: the two F32 values before rounding differ by float rounding, so they round to the
    // same BF16 value or to neighbours: one step, at most 2^-7 of the largest value. F32:
    // float rounding of the norm and the rotation.
    ExpectAgree(got_rows.data(), want_rows.data(), static_cast<int64_t>(got_rows.size()), kNoAbs,
                dtype == DType::kBF16 ? 8e-3 : 2e-6, 0.99999, "cached latents");
    int64_t stray = 0;
    const size_t esize = DTypeSize(dtype);
    for (int64_t e = 0; e < elements; ++e) {
      if (!written[e]) stray += std::memcmp(got.data() + e * esize, want + e * esize, esize) != 0;
    }
    EXPECT_EQ(stray, 0) << "elements changed outside the step's slots";

    // Attention over identical caches (the CPU's bytes), so that only the attention differs.
    ASSERT_TRUE(
        CopyToDevice(gpu_cache.storage().raw(), cpu_cache.storage().raw(), cache_bytes).ok());
    const Tensor q = RandomTensor({rows, kHeads * kQk}, rng);
    MlaParams params{.batch = &batch,
                     .cache = &cpu_cache,
                     .layer = kLayer,
                     .kv_b = &kv_b.host.w,
                     .num_heads = kHeads,
                     .nope_dim = kNope,
                     .rope_dim = kRope,
                     .v_dim = kV,
                     .rope = &rope,
                     .softmax_scale = 1.0f / std::sqrt(static_cast<float>(kQk))};
    MlaParams device_params = params;
    device_params.cache = &gpu_cache;
    device_params.kv_b = &kv_b.device;
    const Tensor dq = ToDevice(q);
    Tensor out = Poisoned(*exact_, DType::kF32, {rows, kHeads * kV});
    exact_->MlaAttention(device_params, dq, out);
    DSERVE_ASSERT_OPS_OK(*exact_);
    const std::vector<float> attended = Read<float>(*exact_, out);
    // Both compute in F32 from the same stored values in another order (see
    // mla_attention_test.cc: about 1e-6 of the largest output); every CPU form is the same
    // function, the model's automatic choice included.
    for (const auto& [mode, form] :
         {std::pair{MlaMode::kAuto, "automatic"}, std::pair{MlaMode::kNaive, "naive"},
          std::pair{MlaMode::kAbsorbed, "absorbed"}}) {
      SCOPED_TRACE(absl::StrCat(form, " CPU form"));
      params.mode = mode;
      Tensor reference = Tensor::Zeros(DType::kF32, {rows, kHeads * kV});
      cpu_.MlaAttention(params, q, reference);
      ExpectAgree(attended.data(), reference.data<float>(), reference.numel(), kNoAbs, 1e-4,
                  0.99999, "attention output");
    }
    if (dtype != DType::kBF16) continue;
    // GemmMode::kTensorCores attends over BF16 caches with mla/decode.h's kernel: queries and
    // probabilities rounded to BF16 for the products (mla_decode_test.cc's bound: 3e-2 of the
    // largest output, cosine 0.9995).
    Tensor tc_out = Poisoned(*tensor_cores_, DType::kF32, {rows, kHeads * kV});
    tensor_cores_->MlaAttention(device_params, dq, tc_out);
    DSERVE_ASSERT_OPS_OK(*tensor_cores_);
    const std::vector<float> tc = Read<float>(*tensor_cores_, tc_out);
    params.mode = MlaMode::kAbsorbed;
    Tensor reference = Tensor::Zeros(DType::kF32, {rows, kHeads * kV});
    cpu_.MlaAttention(params, q, reference);
    ExpectAgree(tc.data(), reference.data<float>(), reference.numel(), kNoAbs, 3e-2, 0.9995,
                "tensor-core attention output");
    // The tensor-core path really ran: BF16 products leave more than F32 rounding.
    EXPECT_GT(Compare(tc.data(), reference.data<float>(), reference.numel()).rel, 1e-6);
  }
}

}  // namespace
}  // namespace dserve::kernels::cuda
