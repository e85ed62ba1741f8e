// What the CudaOps tests share: random inputs, weights placed on both backends, tensors
// poisoned with NaN, results read back, and the fixture holding a CPU backend and the GPU
// backend in both GEMM modes (skipping, with the reason, without a GPU). Test-only, and in an
// unnamed namespace on purpose: each test file of the one binary gets its own copy.
#pragma once

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

  // x * w^T on the CPU (the reference), and on `ops` from a device copy of x into a
  // NaN-poisoned output, read back (the ops' error checked on the way).
  Tensor CpuLinear(const Tensor& x, const Weight& w) {
    Tensor out = Tensor::Zeros(DType::kF32, {x.dim(0), w.rows});
    cpu_.Linear(x, w, out);
    return out;
  }
  std::vector<float> GpuLinear(CudaOps& ops, const Tensor& x, const Weight& w) {
    const Tensor dx = ToDevice(x);
    Tensor out = Poisoned(ops, DType::kF32, {x.dim(0), w.rows});
    ops.Linear(dx, w, out);
    return Read<float>(ops, out);
  }

  cpu::CpuOps cpu_{0};
  std::unique_ptr<CudaOps> exact_, tensor_cores_;
};


}  // namespace
}  // namespace dserve::kernels::cuda
