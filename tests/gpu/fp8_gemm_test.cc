// FP8 on the GPU: the 1x128 activation quantiser against the same rule computed here, and
// cuBLASLt's block-scaled FP8 GEMM (and the BF16 GEMM) against a float64 product of exactly the
// inputs it was given (dequantised on the host), at DeepSeek-V3-like shapes including a partial
// 128-row weight block; then quantiser + GEMM against the CPU backend's Linear, whose F32
// activations are not quantised (a looser bound: E4M3 keeps 3 mantissa bits). Outputs are
// poisoned with NaN first. Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/blas_lt.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/fp8_quant.h"
#include "tests/gpu/gpu_compare.h"

namespace dserve::kernels::cuda {
namespace {

using dserve::testing::ExpectAgree;

// The quantiser's rule on the host: per 128-value group, scale = amax / 448 (1 for zeros);
// scales [cols / 128][Fp8ScaleStride(rows)], padding 1.
void QuantizeHost(const std::vector<float>& x, int64_t rows, int64_t cols, std::vector<uint8_t>* q,
                  std::vector<float>* scales) {
  const int64_t stride = Fp8ScaleStride(rows);
  q->resize(rows * cols);
  scales->assign(cols / 128 * stride, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / 128; ++g) {
      const float* v = x.data() + r * cols + g * 128;
      float amax = 0;
      for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;
      (*scales)[g * stride + r] = scale;
      for (int i = 0; i < 128; ++i) (*q)[r * cols + g * 128 + i] = FloatToFp8E4M3(v[i] / scale);
    }
  }
}

// Weights as DeepSeek ships them: per 128x128 block, scale_inv = amax / 448.
void QuantizeWeights(const std::vector<float>& w, int64_t n, int64_t k, std::vector<uint8_t>* q,
                     std::vector<float>* scale_inv) {
  const int64_t bn = (n + 127) / 128, bk = k / 128;
  scale_inv->assign(bn * bk, 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      float& s = (*scale_inv)[(r / 128) * bk + c / 128];
      s = std::max(s, std::fabs(w[r * k + c]));
    }
  }
  for (float& s : *scale_inv) s = s > 0 ? s / 448.0f : 1.0f;
  q->resize(n * k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      (*q)[r * k + c] = FloatToFp8E4M3(w[r * k + c] / (*scale_inv)[(r / 128) * bk + c / 128]);
    }
  }
}

class CudaFp8Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const absl::Status s = DeviceAvailable(); !s.ok()) GTEST_SKIP() << s.message() << " (the GPU tests need one)";
    absl::StatusOr<std::unique_ptr<BlasLt>> blas = BlasLt::Create();
    ASSERT_TRUE(blas.ok()) << blas.status();
    blas_ = *std::move(blas);
  }

  std::vector<float> Random(int64_t n, float stddev) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }

  template <typename T>
  Tensor Up(const std::vector<T>& v, DType dtype) {
    absl::StatusOr<Tensor> t = DeviceTensor(dtype, {static_cast<int64_t>(v.size())});
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(CopyToDevice(t->raw(), v.data(), v.size() * sizeof(T)).ok());
    return *t;
  }
  Tensor Poisoned(int64_t bytes) {
    absl::StatusOr<Tensor> t = DeviceTensor(DType::kU8, {bytes});
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(FillDevice(t->raw(), 0xFF, bytes).ok());
    return *t;
  }
  // BF16 device output -> F32 host values.
  std::vector<float> DownBf16(const Tensor& t, int64_t n) {
    EXPECT_TRUE(Synchronize().ok());
    std::vector<uint16_t> h(n);
    EXPECT_TRUE(CopyToHost(h.data(), t.raw(), n * 2).ok());
    std::vector<float> out(n);
    for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(h[i]);
    return out;
  }

  std::unique_ptr<BlasLt> blas_;
  std::mt19937 rng_{7};
};

TEST_F(CudaFp8Test, QuantizerMatchesTheRuleExactly) {
  const int64_t rows = 37, cols = 7168;
  std::vector<float> x = Random(rows * cols, 1.0f);
  for (int64_t i = 0; i < rows * cols; i += 1000) x[i] *= 300.0f;  // outliers set some scales
  std::fill(x.begin(), x.begin() + 128, 0.0f);                     // an all-zero group
  std::vector<uint8_t> want_q;
  std::vector<float> want_s;
  QuantizeHost(x, rows, cols, &want_q, &want_s);
  const Tensor dx = Up(x, DType::kF32);
  const Tensor dq = Poisoned(rows * cols);
  const Tensor ds = Poisoned(Fp8ScaleStride(rows) * cols / 128 * 4);
  ASSERT_EQ(LaunchQuantizeFp8PerGroup(dx.data<float>(), rows, cols, dq.data<uint8_t>(),
                                      ds.data<float>(), nullptr),
            cudaSuccess);
  ASSERT_TRUE(Synchronize().ok());
  std::vector<uint8_t> got_q(rows * cols);
  std::vector<float> got_s(Fp8ScaleStride(rows) * cols / 128);  // padding rows included
  ASSERT_TRUE(CopyToHost(got_q.data(), dq.raw(), got_q.size()).ok());
  ASSERT_TRUE(CopyToHost(got_s.data(), ds.raw(), got_s.size() * 4).ok());
  EXPECT_EQ(got_s, want_s);
  int64_t mismatches = 0;
  for (size_t i = 0; i < got_q.size(); ++i) mismatches += got_q[i] != want_q[i];
  EXPECT_EQ(mismatches, 0) << "of " << got_q.size() << " E4M3 bytes";
  // Not a multiple of 128: refused.
  EXPECT_EQ(LaunchQuantizeFp8PerGroup(dx.data<float>(), 1, 100, dq.data<uint8_t>(),
                                      ds.data<float>(), nullptr),
            cudaErrorInvalidValue);
}

struct Shape {
  int64_t m, n, k;
};

TEST_F(CudaFp8Test, BlockScaledGemmMatchesFloat64OfItsInputs) {
  // V3's kv_a (576 x 7168: a partial last 128-row block), q_b, o_proj-like and a small one.
  // (m a multiple of 4 and k of 512, as the GEMM requires.)
  for (const Shape s : {Shape{4, 576, 7168}, Shape{36, 1536, 512}, Shape{64, 2048, 1536},
                        Shape{8, 200, 512}}) {
    SCOPED_TRACE(::testing::Message() << "m " << s.m << ", n " << s.n << ", k " << s.k);
    std::vector<uint8_t> xq, wq;
    std::vector<float> xs, ws;
    QuantizeHost(Random(s.m * s.k, 1.0f), s.m, s.k, &xq, &xs);
    QuantizeWeights(Random(s.n * s.k, 0.02f), s.n, s.k, &wq, &ws);
    std::vector<double> want(s.m * s.n, 0.0);
    const int64_t bk = s.k / 128, stride = Fp8ScaleStride(s.m);
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < s.k; ++c) {
          acc += static_cast<double>(Fp8E4M3ToFloat(xq[i * s.k + c])) * xs[(c / 128) * stride + i] *
                 Fp8E4M3ToFloat(wq[j * s.k + c]) * ws[(j / 128) * bk + c / 128];
        }
        want[i * s.n + j] = acc;
      }
    }
    const Tensor dx = Up(xq, DType::kU8), dw = Up(wq, DType::kU8);
    const Tensor dxs = Up(xs, DType::kF32), dws = Up(ws, DType::kF32);
    const Tensor dout = Poisoned(s.m * s.n * 2);
    GemmParams p{s.m, s.n, s.k, dx.raw(), dw.raw(), dxs.data<float>(), dws.data<float>(),
                 dout.raw()};
    ASSERT_TRUE(blas_->Fp8BlockScaled(p, nullptr).ok());
    const std::vector<float> got = DownBf16(dout, s.m * s.n);
    std::vector<float> want32(want.begin(), want.end());
    // BF16 output: 2^-9 relative rounding; FP32 accumulation over k.
    ExpectAgree(got.data(), want32.data(), s.m * s.n, 1e30, 6e-3, 0.99999, "FP8 GEMM");
  }
}

TEST_F(CudaFp8Test, QuantizerAndGemmMatchTheCpuLinear) {
  const int64_t m = 16, n = 512, k = 1536;
  const std::vector<float> x = Random(m * k, 1.0f);
  std::vector<uint8_t> wq;
  std::vector<float> ws;
  QuantizeWeights(Random(n * k, 0.02f), n, k, &wq, &ws);
  // CPU: F32 activations times the FP8 weight.
  Weight w;
  w.dtype = DType::kF8E4M3;
  w.rows = n;
  w.cols = k;
  w.data = wq.data();
  w.scale_inv = ws.data();
  Tensor xt = Tensor::Zeros(DType::kF32, {m, k});
  std::memcpy(xt.raw(), x.data(), x.size() * 4);
  Tensor want = Tensor::Zeros(DType::kF32, {m, n});
  cpu::CpuOps(1).Linear(xt, w, want);
  // GPU: quantise the activations, then the block-scaled GEMM.
  const Tensor dx = Up(x, DType::kF32), dq = Poisoned(m * k);
  const Tensor ds = Poisoned(Fp8ScaleStride(m) * k / 128 * 4);
  ASSERT_EQ(LaunchQuantizeFp8PerGroup(dx.data<float>(), m, k, dq.data<uint8_t>(),
                                      ds.data<float>(), nullptr),
            cudaSuccess);
  const Tensor dw = Up(wq, DType::kU8), dws = Up(ws, DType::kF32), dout = Poisoned(m * n * 2);
  GemmParams p{m, n, k, dq.raw(), dw.raw(), ds.data<float>(), dws.data<float>(), dout.raw()};
  ASSERT_TRUE(blas_->Fp8BlockScaled(p, nullptr).ok());
  const std::vector<float> got = DownBf16(dout, m * n);
  // E4M3 activations (3 mantissa bits) against F32 ones: errors average down over k.
  ExpectAgree(got.data(), want.data<float>(), m * n, 1e30, 0.05, 0.998, "quantised GEMM vs CPU");
}

TEST_F(CudaFp8Test, Bf16GemmMatchesFloat64OfItsInputs) {
  const int64_t m = 33, n = 1024, k = 768;
  std::vector<uint16_t> xb(m * k), wb(n * k);
  const std::vector<float> x = Random(m * k, 1.0f), w = Random(n * k, 0.05f);
  for (int64_t i = 0; i < m * k; ++i) xb[i] = FloatToBf16(x[i]);
  for (int64_t i = 0; i < n * k; ++i) wb[i] = FloatToBf16(w[i]);
  std::vector<float> want(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t c = 0; c < k; ++c) {
        acc += static_cast<double>(Bf16ToFloat(xb[i * k + c])) * Bf16ToFloat(wb[j * k + c]);
      }
      want[i * n + j] = static_cast<float>(acc);
    }
  }
  const Tensor dx = Up(xb, DType::kBF16), dw = Up(wb, DType::kBF16), dout = Poisoned(m * n * 2);
  GemmParams p{m, n, k, dx.raw(), dw.raw(), nullptr, nullptr, dout.raw()};
  ASSERT_TRUE(blas_->Bf16(p, nullptr).ok());
  const std::vector<float> got = DownBf16(dout, m * n);
  ExpectAgree(got.data(), want.data(), m * n, 1e30, 6e-3, 0.99999, "BF16 GEMM");
}

TEST_F(CudaFp8Test, BadShapesAreRefusedWithTheArgumentNamed) {
  GemmParams p{4, 256, 100, this, this, nullptr, nullptr, this};
  absl::Status s = blas_->Fp8BlockScaled(p, nullptr);
  EXPECT_NE(s.message().find("k must be a multiple of 16"), std::string::npos) << s;
  p.k = 384;
  s = blas_->Fp8BlockScaled(p, nullptr);
  EXPECT_NE(s.message().find("k must be a multiple of 512"), std::string::npos) << s;
  p.k = 512;
  p.m = 5;
  s = blas_->Fp8BlockScaled(p, nullptr);
  EXPECT_NE(s.message().find("m must be a multiple of 4"), std::string::npos) << s;
  p.m = 4;
  p.n = 12;
  s = blas_->Fp8BlockScaled(p, nullptr);
  EXPECT_NE(s.message().find("n must be a multiple of 8"), std::string::npos) << s;
  p.n = 256;
  s = blas_->Fp8BlockScaled(p, nullptr);
  EXPECT_NE(s.message().find("x_scales and w_scales are required"), std::string::npos) << s;
}

}  // namespace
}  // namespace dserve::kernels::cuda
