// CpuOps::Linear (and through it every ISA's gemv_rows / gemm_rows) against a float64
// reference, for FP8 block-scaled, BF16, F16 and F32 weights, odd shapes and token counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"
#include "kernels/weight.h"
#include "tests/support/test_weight.h"

namespace dserve::kernels::cpu {
namespace {

using testing::SupportedIsas;
using testing::TestWeight;

// A random weight with its storage and the real value of every element in double.
TestWeight RandomWeight(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng,
                        int64_t block_rows = 128, int64_t block_cols = 128) {
  std::vector<uint8_t> bytes(rows * cols * DTypeSize(dtype));
  std::vector<float> scales;
  std::uniform_int_distribution<int> byte(0, 255), bit(0, 1);
  switch (dtype) {
    case DType::kF8E4M3: {
      for (int64_t i = 0; i < rows * cols; ++i) {
        int b;
        do {
          b = byte(rng);
        } while ((b & 0x7F) == 0x7F);  // every code but the two NaNs
        bytes[i] = static_cast<uint8_t>(b);
      }
      // Scales spread over a few binades, none a power of two.
      std::uniform_real_distribution<double> mant(0.5, 1.0);
      std::uniform_int_distribution<int> exp(-9, -3);
      scales.resize(testing::NumBlockScales(rows, cols, block_rows, block_cols));
      for (float& s : scales) s = static_cast<float>(std::ldexp(mant(rng), exp(rng)));
      break;
    }
    case DType::kBF16:
    case DType::kF16: {
      const bool bf16 = dtype == DType::kBF16;
      // Random sign and mantissa; exponents over +-7 binades (F16: subnormals included).
      std::uniform_int_distribution<int> exp = bf16 ? std::uniform_int_distribution<int>(120, 134)
                                                    : std::uniform_int_distribution<int>(0, 22);
      std::uniform_int_distribution<int> mant(0, bf16 ? 0x7F : 0x3FF);
      uint16_t* h = reinterpret_cast<uint16_t*>(bytes.data());
      for (int64_t i = 0; i < rows * cols; ++i) {
        const int shift = bf16 ? 7 : 10;
        h[i] = static_cast<uint16_t>((bit(rng) << 15) | (exp(rng) << shift) | mant(rng));
      }
      break;
    }
    default: {
      std::normal_distribution<float> normal(0.0f, 1.0f);
      float* f = reinterpret_cast<float*>(bytes.data());
      for (int64_t i = 0; i < rows * cols; ++i) f[i] = normal(rng);
      break;
    }
  }
  return testing::MakeTestWeight(dtype, rows, cols, std::move(bytes), std::move(scales), block_rows,
                                 block_cols);
}

Tensor RandomActivations(int64_t T, int64_t K, std::mt19937& rng) {
  Tensor x = Tensor::Zeros(DType::kF32, {T, K});
  std::normal_distribution<float> normal(0.0f, 1.0f);
  float* p = x.data<float>();
  for (int64_t i = 0; i < T * K; ++i) p[i] = (i % 11 == 5) ? 0.0f : normal(rng);
  return x;
}

// Runs Linear for every ISA and checks each output against the double reference:
//   |y - ref| <= 1e-5 * sum_k |x_k w_k| + 1e-6.
// Float32 accumulation errs by at most about n * 2^-24 * sum_k |x_k w_k| for a chain of n
// dependent additions; every kernel here splits a row into vector lanes, register tiles and
// 128-column scale blocks, so n stays below ~40 even at K = 272 (40 * 6e-8 = 2.4e-6), and the
// FP8 path's x * scale rounding adds one more ulp. 1e-5 leaves a 4x margin; the 1e-6 floor
// covers outputs whose terms all vanish.
void CheckLinear(const TestWeight& tw, int64_t T, std::mt19937& rng) {
  const int64_t N = tw.w.rows, K = tw.w.cols;
  const Tensor x = RandomActivations(T, K, rng);
  std::vector<double> ref(T * N), bound(T * N);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(x.data<float>()[t * K + k]) * tw.real[n * K + k];
        acc += p;
        mag += std::fabs(p);
      }
      ref[t * N + n] = acc;
      bound[t * N + n] = 1e-5 * mag + 1e-6;
    }
  }
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(std::string("isa ") + std::string(IsaName(isa)));
    CpuOps ops(2, isa);
    Tensor y = Tensor::Zeros(DType::kF32, {T, N});
    std::fill(y.data<float>(), y.data<float>() + T * N, std::numeric_limits<float>::quiet_NaN());
    ops.Linear(x, tw.w, y);
    int64_t bad = 0;
    for (int64_t i = 0; i < T * N; ++i) {
      const double got = y.data<float>()[i];
      if (!(std::fabs(got - ref[i]) <= bound[i])) {
        if (++bad <= 5) {
          ADD_FAILURE() << "token " << i / N << " row " << i % N << ": got " << got << ", want "
                        << ref[i] << " +- " << bound[i];
        }
      }
    }
    EXPECT_EQ(bad, 0) << "outputs out of tolerance";
  }
}

constexpr int64_t kTokenCounts[] = {1, 2, 3, 4, 5, 6, 7, 13, 64};

struct Shape {
  int64_t rows, cols;
};

// Shapes around the vector widths (8, 16), the gemv row groups (2, 4), the GEMM panels (16,
// 32 rows) and the FP8 scale blocks (128): partial last blocks in both directions.
constexpr Shape kShapes[] = {{200, 144}, {130, 272}, {256, 256}, {70, 200},
                             {37, 100},  {129, 128}, {1, 16},    {3, 8}};

void RunAll(DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  for (const Shape& s : kShapes) {
    const TestWeight tw = RandomWeight(dtype, s.rows, s.cols, rng);
    for (int64_t T : kTokenCounts) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " [" + std::to_string(s.rows) + ", " +
                   std::to_string(s.cols) + "] T=" + std::to_string(T));
      CheckLinear(tw, T, rng);
    }
  }
}

TEST(CpuLinear, Fp8BlockScaled) { RunAll(DType::kF8E4M3, 1); }
TEST(CpuLinear, Bf16) { RunAll(DType::kBF16, 2); }
TEST(CpuLinear, F16) { RunAll(DType::kF16, 3); }
TEST(CpuLinear, F32) { RunAll(DType::kF32, 4); }

// Scale blocks other than 128x128 (config.json's weight_block_size), including a column block
// that does not divide the row and one narrower than AVX-512's 16 lanes' multiple.
TEST(CpuLinear, Fp8OtherBlockSizes) {
  std::mt19937 rng(5);
  struct Case {
    Shape shape;
    int64_t block_rows, block_cols;
  };
  const Case cases[] = {
      {{150, 200}, 64, 48}, {{96, 160}, 32, 32}, {{40, 64}, 7, 16}, {{33, 96}, 128, 64}};
  for (const Case& c : cases) {
    const TestWeight tw =
        RandomWeight(DType::kF8E4M3, c.shape.rows, c.shape.cols, rng, c.block_rows, c.block_cols);
    for (int64_t T : kTokenCounts) {
      SCOPED_TRACE("block " + std::to_string(c.block_rows) + "x" + std::to_string(c.block_cols) +
                   " [" + std::to_string(c.shape.rows) + ", " + std::to_string(c.shape.cols) +
                   "] T=" + std::to_string(T));
      CheckLinear(tw, T, rng);
    }
  }
}

// Special values: an exactly representable product sum must come out exact, and a zero
// input row must give exact zeros whatever the weights.
TEST(CpuLinear, ExactCases) {
  std::mt19937 rng(6);
  for (DType dtype : {DType::kF8E4M3, DType::kBF16, DType::kF16, DType::kF32}) {
    const TestWeight tw = RandomWeight(dtype, 48, 144, rng);
    for (int64_t T : {1, 3, 8}) {
      Tensor x = Tensor::Zeros(DType::kF32, {T, 144});
      for (int64_t t = 0; t < T; ++t) x.data<float>()[t * 144 + (t * 37) % 144] = 1.0f;
      x.data<float>()[0] = 0.0f;  // token 0: all zeros
      for (Isa isa : SupportedIsas()) {
        SCOPED_TRACE(std::string(DTypeName(dtype)) + " " + std::string(IsaName(isa)) +
                     " T=" + std::to_string(T));
        CpuOps ops(2, isa);
        Tensor y = Tensor::Zeros(DType::kF32, {T, 48});
        ops.Linear(x, tw.w, y);
        for (int64_t n = 0; n < 48; ++n) {
          ASSERT_EQ(y.data<float>()[n], 0.0f) << "zero row, output " << n;
          for (int64_t t = 1; t < T; ++t) {
            // One-hot input selects one weight; its value is a float (scale * code exactly).
            ASSERT_EQ(static_cast<double>(y.data<float>()[t * 48 + n]),
                      static_cast<double>(static_cast<float>(tw.real[n * 144 + (t * 37) % 144])))
                << "token " << t << " output " << n;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dserve::kernels::cpu
