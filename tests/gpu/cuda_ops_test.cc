// CudaOps, the Ops interface on the GPU, against CpuOps on the same inputs: every op the model
// calls, through the Ops API (device weights from PlaceWeight, activations from Empty, host
// spans for ids, rows, positions and block tables), in both GEMM modes. Exact mode must agree
// to F32 rounding; the tensor-core mode within the rounding of its E4M3 / BF16 activations.
// Outputs are poisoned with NaN first, so an element never written fails. Also: the latent
// cache's allocation and page copy, and how an out-of-memory error stops the ops until
// TakeError(). Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/latent_cache.h"
#include "kernels/ops.h"
#include "kernels/router_config.h"
#include "kernels/weight.h"
#include "tests/gpu/gpu_compare.h"
#include "tests/support/test_weight.h"

namespace dserve::kernels::cuda {
namespace {

using dserve::testing::Agreement;
using dserve::testing::Compare;
using dserve::testing::ExpectAgree;
using dserve::testing::TestWeight;

constexpr double kNoAbs = std::numeric_limits<double>::infinity();

// Exact mode: both backends sum the same F32 products in different orders. Each result is
// within k * 2^-24 * sum|x * w| of the exact sum at worst; rounding errors of random sign
// leave about 2^-24 * sum|x * w| (the partial sums' RMS is far below the sum of magnitudes).
// 1e-5 of sum|x * w| is then a wide margin over rounding (and above the worst-case bound of
// both sides, 2k * 2^-24, up to k = 83), yet a wrong element, block scale or row misses it by
// orders of magnitude. The bound is per output and relative to sum|x * w| rather than to the
// output, which cancellation can make arbitrarily small (with one output of 0.001, rounding
// would fail a bound relative to the output).
constexpr double kExactRel = 1e-5;
// Relative RMS error up to 4.5e-3: far above F32 rounding, far below any indexing mistake.
constexpr double kExactCosine = 0.99999;

// FP8 tensor cores: the activations are rounded to E4M3 per 1x128 group (3 mantissa bits:
// relative error up to 2^-4, 2.65% RMS over a normal range of values), the weights are the
// same E4M3 values on both sides, and the product is rounded to BF16 (2^-9). A dot product of
// k terms of random sign then errs by about 2.65% of a typical output (the errors are
// independent per element and weighted like the terms): cosine 1 - 0.0265^2 / 2 = 0.99965;
// 0.998 allows 6.3% RMS. The largest error against the largest output is about 0.027 (both
// are extremes of the same number of draws); 0.05 allows for their spread with few outputs.
// (This arithmetic simulated in double on the test's shapes and inputs, three draws each,
// gave at worst rel 0.034 and cosine 0.99962.) The controls below show the test can fail: a
// reference from other activations, or one with a 128-column group of them dropped (a scale
// stride or group mistake), misses these bounds (simulated: rel 0.10 or more).
constexpr double kFp8Rel = 0.05;
constexpr double kFp8Cosine = 0.998;
// BF16 tensor cores: activations and outputs rounded to BF16 (8 significant bits, 0.17% RMS
// each), about 0.25% RMS together: cosine 0.999997 expected, 0.99999 allows 0.45%; the
// largest error about 0.3% of the largest output, 1% allowed (simulated: at worst rel 0.0042,
// cosine 0.9999969).
constexpr double kBf16Rel = 1e-2;
constexpr double kBf16Cosine = 0.99999;

// Fails the test (returning from it) when the backend recorded an error.
#define DSERVE_ASSERT_OPS_OK(ops)                               \
  do {                                                          \
    const absl::Status dserve_ops_status_ = (ops).TakeError();  \
    ASSERT_TRUE(dserve_ops_status_.ok()) << dserve_ops_status_; \
  } while (0)

Tensor RandomTensor(std::vector<int64_t> shape, std::mt19937& rng, float mean = 0.0f,
                    float stddev = 1.0f) {
  Tensor t = Tensor::Zeros(DType::kF32, std::move(shape));
  std::normal_distribution<float> normal(mean, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

Tensor CopyOf(const Tensor& host) {
  Tensor t = Tensor::Zeros(host.dtype(), host.shape());
  std::memcpy(t.raw(), host.raw(), host.bytes());
  return t;
}

// FP8 element codes are drawn as normal * kFp8Spread, which spreads them over most of E4M3's
// range (subnormals included); the block scale brings them back to the wanted size.
constexpr float kFp8Spread = 48.0f;

// A weight [rows, cols] of random elements of about `stddev` in `dtype`. FP8: every 128x128
// block gets its own scale, up to 4x apart, so a block read with a neighbour's scale shows;
// partial edge blocks come from sizes that are not multiples of 128.
TestWeight RandomWeight(DType dtype, int64_t rows, int64_t cols, float stddev, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = rows * cols;
  std::vector<uint8_t> bytes(n * DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) {
    const float v = normal(rng);
    if (dtype == DType::kF8E4M3) {
      bytes[i] = FloatToFp8E4M3(v * kFp8Spread);
    } else if (dtype == DType::kBF16 || dtype == DType::kF16) {
      const uint16_t h = dtype == DType::kBF16 ? FloatToBf16(v * stddev) : FloatToF16(v * stddev);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else {
      const float f = v * stddev;
      std::memcpy(bytes.data() + 4 * i, &f, 4);
    }
  }
  std::vector<float> scales;
  if (dtype == DType::kF8E4M3) {
    std::uniform_real_distribution<float> octaves(-1.0f, 1.0f);
    scales.resize(dserve::testing::NumBlockScales(rows, cols));
    for (float& s : scales) s = stddev / kFp8Spread * std::exp2(octaves(rng));
  }
  return dserve::testing::MakeTestWeight(dtype, rows, cols, std::move(bytes), std::move(scales));
}

// A weight as CpuOps reads it (host bytes) with its device copy, as CudaOps reads it.
struct PlacedWeight {
  TestWeight host;
  Weight device;
};

PlacedWeight Place(CudaOps& ops, TestWeight host) {
  PlacedWeight p{std::move(host), Weight()};
  p.device = p.host.w;
  const absl::Status s = ops.PlaceWeight(p.device);
  EXPECT_TRUE(s.ok()) << s;
  return p;
}

// sum over k of |x[t, k] * W[n, k]| for every output [t, n]: the scale of the rounding error
// of an F32 sum of those products.
std::vector<double> AbsProductSums(const Tensor& x, const TestWeight& w) {
  const int64_t m = x.dim(0), n = w.w.rows, k = w.w.cols;
  std::vector<double> sums(m * n);
  for (int64_t t = 0; t < m; ++t) {
    const float* xt = x.data<float>() + t * k;
    for (int64_t r = 0; r < n; ++r) {
      const double* wr = w.real.data() + r * k;
      double s = 0;
      for (int64_t c = 0; c < k; ++c) s += std::fabs(xt[c] * wr[c]);
      sums[t * n + r] = s;
    }
  }
  return sums;
}

// Every element written and within tol * bound[i] of the reference; cosine as in exact mode.
void ExpectWithinSumBound(const std::vector<float>& got, const Tensor& want,
                          const std::vector<double>& bound, double tol, const std::string& what) {
  const int64_t n = want.numel();
  int64_t non_finite = 0, worst_at = 0;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) {
      ++non_finite;
      continue;
    }
    const double err = std::fabs(static_cast<double>(got[i]) - want.data<float>()[i]);
    const double ratio = bound[i] > 0 ? err / bound[i] : (err > 0 ? kNoAbs : 0.0);
    if (ratio > worst) {
      worst = ratio;
      worst_at = i;
    }
  }
  EXPECT_EQ(non_finite, 0) << what << ": elements not written (or not finite)";
  EXPECT_LE(worst, tol) << what << ": element " << worst_at << " is " << got[worst_at]
                        << ", the CPU's " << want.data<float>()[worst_at] << ", sum|x*w| "
                        << bound[worst_at];
  EXPECT_GE(Compare(got.data(), want.data<float>(), n).cosine, kExactCosine) << what;
}

// Whether an agreement would pass ExpectAgree at these bounds (for the controls).
bool Passes(const Agreement& a, double rel, double cosine) {
  return a.non_finite == 0 && a.rel <= rel && a.cosine >= cosine;
}

// Values not exactly representable in BF16. The FP8 tensor-core path rounds every output to
// BF16; the exact kernel's F32 outputs almost never are, so this tells which path ran.
int64_t NonBf16Count(const std::vector<float>& v) {
  int64_t count = 0;
  for (const float f : v) count += (FloatToBits(f) & 0xFFFFu) != 0;
  return count;
}

// Activations [m, k] whose 128-column groups differ in size by up to 4x (group 0 stays at 1),
// so that a group quantised or multiplied with another group's scale shows.
Tensor GroupScaledActivations(int64_t m, int64_t k, std::mt19937& rng) {
  Tensor x = RandomTensor({m, k}, rng);
  std::uniform_real_distribution<float> octaves(-1.0f, 1.0f);
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t g = 128; g < k; g += 128) {
      const float s = std::exp2(octaves(rng));
      for (int64_t c = g; c < std::min(k, g + 128); ++c) x.data<float>()[t * k + c] *= s;
    }
  }
  return x;
}

// The dtype's name as a std::string (this Abseil's StrCat takes no std::string_view).
std::string TypeName(DType dtype) { return std::string(DTypeName(dtype)); }

std::string ShapeName(int64_t m, int64_t n, int64_t k) {
  return absl::StrCat("m ", m, ", n ", n, ", k ", k);
}

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const absl::Status s = DeviceAvailable(); !s.ok()) {
      GTEST_SKIP() << s.message() << " (the GPU tests need one)";
    }
    exact_ = NewOps(GemmMode::kExact);
    tensor_cores_ = NewOps(GemmMode::kTensorCores);
    ASSERT_NE(exact_, nullptr);
    ASSERT_NE(tensor_cores_, nullptr);
  }

  static std::unique_ptr<CudaOps> NewOps(GemmMode mode) {
    absl::StatusOr<std::unique_ptr<CudaOps>> ops = CudaOps::Create({.device = 0, .gemm = mode});
    EXPECT_TRUE(ops.ok()) << ops.status();
    return ops.ok() ? *std::move(ops) : nullptr;
  }

  // A device copy of a host tensor (PlaceTensor's own cudaMalloc: not stream-ordered, so
  // either backend may use it).
  Tensor ToDevice(const Tensor& host) {
    Tensor t = host;
    const absl::Status s = exact_->PlaceTensor(t);
    EXPECT_TRUE(s.ok()) << s;
    return t;
  }

  // A tensor from `ops`.Empty() (the ops that will write it: its pool is ordered on their
  // stream), every byte 0xFF: NaN in F32, -1 in I32.
  static Tensor Poisoned(CudaOps& ops, DType dtype, std::vector<int64_t> shape) {
    Tensor t = ops.Empty(dtype, std::move(shape));
    const absl::Status s = FillDevice(t.raw(), 0xFF, t.bytes());
    EXPECT_TRUE(s.ok()) << s;
    return t;
  }

  // The tensor's elements, copied to the host by the ops that wrote it.
  template <typename T>
  static std::vector<T> Read(CudaOps& ops, const Tensor& t) {
    std::vector<T> v(t.numel());
    ops.CopyToHost(t, v.data());
    const absl::Status s = ops.TakeError();
    EXPECT_TRUE(s.ok()) << s;
    return v;
  }

  cpu::CpuOps cpu_{0};
  std::unique_ptr<CudaOps> exact_, tensor_cores_;
};

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
          Tensor want = Tensor::Zeros(DType::kF32, {m, n});
          cpu_.Linear(x, w.host.w, want);
          const Tensor dx = ToDevice(x);
          Tensor out = Poisoned(*exact_, DType::kF32, {m, n});
          exact_->Linear(dx, w.device, out);
          DSERVE_ASSERT_OPS_OK(*exact_);
          const std::vector<float> got = Read<float>(*exact_, out);
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
        Tensor want = Tensor::Zeros(DType::kF32, {m, n});
        cpu_.Linear(x, w.host.w, want);
        const Tensor dx = ToDevice(x);
        Tensor out = Poisoned(*tensor_cores_, DType::kF32, {m, n});
        tensor_cores_->Linear(dx, w.device, out);
        DSERVE_ASSERT_OPS_OK(*tensor_cores_);
        const std::vector<float> got = Read<float>(*tensor_cores_, out);
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
        Tensor want = Tensor::Zeros(DType::kF32, {m, n});
        cpu_.Linear(x, w.host.w, want);
        const Tensor dx = ToDevice(x);
        Tensor out = Poisoned(*tensor_cores_, DType::kF32, {m, n});
        tensor_cores_->Linear(dx, w.device, out);
        DSERVE_ASSERT_OPS_OK(*tensor_cores_);
        const std::vector<float> got = Read<float>(*tensor_cores_, out);
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
      Tensor want = Tensor::Zeros(DType::kF32, {m, c.n});
      cpu_.Linear(x, w.host.w, want);
      const Tensor dx = ToDevice(x);
      Tensor out = Poisoned(*tensor_cores_, DType::kF32, {m, c.n});
      tensor_cores_->Linear(dx, w.device, out);
      DSERVE_ASSERT_OPS_OK(*tensor_cores_);
      const std::vector<float> got = Read<float>(*tensor_cores_, out);
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

TEST_F(CudaOpsTest, MoeExpertsExactMatchesCpu) {
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

TEST_F(CudaOpsTest, MoeExpertsTensorCoresAreWithinActivationRounding) {
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
      for (const int64_t T : {7, 64}) {
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

TEST_F(CudaOpsTest, NewLatentCacheIsZeroedAndCopyCachePageCopiesEveryLayer) {
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

TEST_F(CudaOpsTest, MlaWriteCacheThenAttentionMatchCpu) {
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
