// Scalar dtype conversions (core/dtype.h) and the per-ISA FP8 decoders (kernels/cpu/), checked
// against the formats' definitions written out here in double precision.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/primitives.h"
#include "kernels/weight.h"
#include "tests/support/test_weight.h"

namespace dserve {
namespace {

using kernels::Weight;
using kernels::cpu::GetPrimitives;
using kernels::cpu::Isa;
using kernels::cpu::IsaName;
using kernels::cpu::IsaSupported;
using testing::SupportedIsas;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// E4M3fn by definition: sign, 4 exponent bits (bias 7), 3 mantissa bits, subnormals at
// exponent 0, no infinities, only S.1111.111 is NaN.
double E4M3Definition(uint8_t b) {
  const double sign = (b & 0x80) ? -1.0 : 1.0;
  const int e = (b >> 3) & 0xF;
  const int m = b & 0x7;
  if (e == 15 && m == 7) return kNaN;
  if (e == 0) return sign * (m / 8.0) * std::pow(2.0, -6);
  return sign * (1.0 + m / 8.0) * std::pow(2.0, e - 7);
}

// IEEE binary16 by definition.
double F16Definition(uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  if (e == 31) return m ? kNaN : sign * std::numeric_limits<double>::infinity();
  if (e == 0) return sign * (m / 1024.0) * std::pow(2.0, -14);
  return sign * (1.0 + m / 1024.0) * std::pow(2.0, e - 15);
}

bool SameValue(double want, float got) {
  if (std::isnan(want)) return std::isnan(got);
  return want == static_cast<double>(got) && std::signbit(want) == std::signbit(got);
}

// ---------------------------------------------------------------------------------------------
// FP8 E4M3fn
// ---------------------------------------------------------------------------------------------

TEST(Fp8E4M3, DecodeMatchesDefinitionForAllCodes) {
  for (int code = 0; code < 256; ++code) {
    EXPECT_TRUE(SameValue(E4M3Definition(code), Fp8E4M3ToFloat(code))) << "code " << code;
  }
}

TEST(Fp8E4M3, KnownValues) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xFF)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x00), 0.0f);
  EXPECT_FALSE(std::signbit(Fp8E4M3ToFloat(0x00)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x80), 0.0f);
  EXPECT_TRUE(std::signbit(Fp8E4M3ToFloat(0x80)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x3C), 1.5f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x40), 2.0f);
  // 0x7F is the only reserved magnitude: 0x78..0x7E are ordinary finite values.
  EXPECT_EQ(Fp8E4M3ToFloat(0x78), 256.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x7D), 416.0f);
}

TEST(Fp8E4M3, PositiveFiniteCodesStrictlyIncrease) {
  int finite = 0;
  for (int code = 0x01; code <= 0x7E; ++code) {
    ASSERT_TRUE(std::isfinite(Fp8E4M3ToFloat(code))) << code;
    EXPECT_LT(Fp8E4M3ToFloat(code - 1), Fp8E4M3ToFloat(code)) << "code " << code;
    ++finite;
  }
  EXPECT_EQ(finite, 126);
}

TEST(Fp8E4M3, NegativeCodesMirrorPositive) {
  for (int code = 0; code < 0x80; ++code) {
    const float pos = Fp8E4M3ToFloat(code);
    const float neg = Fp8E4M3ToFloat(code | 0x80);
    if (std::isnan(pos)) {
      EXPECT_TRUE(std::isnan(neg)) << code;
    } else {
      EXPECT_EQ(neg, -pos) << code;
      EXPECT_TRUE(std::signbit(neg)) << code;
    }
  }
}

TEST(Fp8E4M3, EncodeRoundTripsEveryNonNanCode) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7F) == 0x7F) continue;
    EXPECT_EQ(FloatToFp8E4M3(static_cast<float>(E4M3Definition(code))), code) << "code " << code;
  }
}

// Between two neighbouring codes, the exact midpoint goes to the code with an even mantissa
// (even code number, since the mantissa is the low bits), and anything off the midpoint goes
// to the nearer one. Covers subnormal/subnormal, subnormal/normal and normal/normal pairs.
TEST(Fp8E4M3, EncodeRoundsToNearestEven) {
  for (int code = 0; code < 0x7E; ++code) {
    const double lo = E4M3Definition(code), hi = E4M3Definition(code + 1);
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2) << "midpoint not exact in float";
    const int even = code % 2 == 0 ? code : code + 1;
    for (int sign : {0, 0x80}) {
      const float s = sign ? -1.0f : 1.0f;
      EXPECT_EQ(FloatToFp8E4M3(s * mid), even | sign) << "midpoint after code " << code;
      EXPECT_EQ(FloatToFp8E4M3(s * std::nextafter(mid, 0.0f)), code | sign) << code;
      EXPECT_EQ(FloatToFp8E4M3(s * std::nextafter(mid, 1000.0f)), (code + 1) | sign) << code;
    }
  }
  // Half the smallest subnormal is a tie between 0 and 0x01: zero is even.
  EXPECT_EQ(FloatToFp8E4M3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(FloatToFp8E4M3(-std::ldexp(1.0f, -10)), 0x80);
  EXPECT_EQ(FloatToFp8E4M3(std::ldexp(1.0f, -12)), 0x00);
  // Known ties: 7.5 * 2^-9 -> 0x08 (even), 1.0625 -> 1.0 (0x38), 1.1875 -> 1.25 (0x3A).
  EXPECT_EQ(FloatToFp8E4M3(7.5f * std::ldexp(1.0f, -9)), 0x08);
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);
  EXPECT_EQ(FloatToFp8E4M3(1.1875f), 0x3A);
}

TEST(Fp8E4M3, EncodeSaturatesBeyond448) {
  for (float f : {448.0f, 448.5f, 463.9f, 464.0f, 479.0f, 480.0f, 1000.0f, 65504.0f, 1e30f,
                  std::numeric_limits<float>::max()}) {
    EXPECT_EQ(FloatToFp8E4M3(f), 0x7E) << f;
    EXPECT_EQ(FloatToFp8E4M3(-f), 0xFE) << -f;
  }
}

TEST(Fp8E4M3, EncodeNanIs0x7F) {
  EXPECT_EQ(FloatToFp8E4M3(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(FloatToFp8E4M3(-std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(FloatToFp8E4M3(BitsToFloat(0x7F800001)), 0x7F);  // signalling NaN
}

// ---------------------------------------------------------------------------------------------
// BF16
// ---------------------------------------------------------------------------------------------

// Round-to-nearest-even by the definition: the two bf16 neighbours of f and their distances,
// computed exactly in double. Past the largest bf16 the upper neighbour is 2^128 (infinity).
uint16_t Bf16ByDefinition(float f) {
  const uint32_t bits = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t mag = bits & 0x7FFFFFFF;
  const uint16_t lower = static_cast<uint16_t>(mag >> 16);  // truncation toward zero
  const uint16_t upper = lower + 1;
  const double a = std::fabs(static_cast<double>(f));
  const double lo = Bf16ToFloat(lower);
  const double hi = upper == 0x7F80 ? std::ldexp(1.0, 128) : Bf16ToFloat(upper);
  const double dlo = a - lo, dhi = hi - a;
  uint16_t pick;
  if (dlo < dhi) {
    pick = lower;
  } else if (dhi < dlo) {
    pick = upper;
  } else {
    pick = (lower % 2 == 0) ? lower : upper;
  }
  return sign | pick;
}

TEST(Bf16, RoundsToNearestEvenAtTies) {
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3F808000)), 0x3F80);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3F818000)), 0x3F82);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0xBF808000)), 0xBF80);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0xBF818000)), 0xBF82);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3F808001)), 0x3F81);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3F807FFF)), 0x3F80);
  // A subnormal tie and the carry into the exponent.
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x00018000)), 0x0002);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3FFF8000)), 0x4000);
  // Above the largest bf16 plus half an ulp: infinity, as IEEE rounding says.
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x7F7F8000)), 0x7F80);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x7F7F7FFF)), 0x7F7F);
}

TEST(Bf16, MatchesDefinitionOnTiesAndRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    if (i % 2) b = (b & 0xFFFF0000) | 0x8000;  // every other one an exact tie
    const float f = BitsToFloat(b);
    if (!std::isfinite(f)) continue;
    ASSERT_EQ(FloatToBf16(f), Bf16ByDefinition(f)) << std::hex << "bits 0x" << b;
  }
}

TEST(Bf16, NanStaysNan) {
  for (uint32_t b : {0x7FC00000u, 0x7F800001u, 0x7F810000u, 0x7FFFFFFFu, 0xFFC00000u, 0xFF800001u,
                     0xFFFFFFFFu}) {
    EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(BitsToFloat(b))))) << std::hex << b;
  }
}

TEST(Bf16, RoundTripsEveryNonNanPattern) {
  int checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(h));
    // The decode is the definition: the pattern is the float's top half.
    ASSERT_EQ(FloatToBits(f), h << 16);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBf16(f), h) << std::hex << "pattern 0x" << h;
    ++checked;
  }
  EXPECT_EQ(checked, 65536 - 2 * 127);  // 2 signs x 127 NaN mantissas
}

// ---------------------------------------------------------------------------------------------
// F16
// ---------------------------------------------------------------------------------------------

TEST(F16, DecodeMatchesDefinitionForAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_TRUE(SameValue(F16Definition(h), F16ToFloat(h))) << std::hex << "pattern 0x" << h;
  }
}

TEST(F16, RoundTripsEveryFinitePattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 0x1F) == 0x1F) continue;
    ASSERT_EQ(FloatToF16(F16ToFloat(h)), h) << std::hex << "pattern 0x" << h;
  }
  EXPECT_EQ(FloatToF16(INFINITY), 0x7C00);
  EXPECT_EQ(FloatToF16(-INFINITY), 0xFC00);
}

TEST(F16, EncodeRoundsToNearestEvenBetweenAllNeighbours) {
  for (uint32_t h = 0; h < 0x7BFF; ++h) {
    const double lo = F16Definition(h), hi = F16Definition(h + 1);
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const uint32_t even = h % 2 == 0 ? h : h + 1;
    ASSERT_EQ(FloatToF16(mid), even) << std::hex << "midpoint after 0x" << h;
    ASSERT_EQ(FloatToF16(-mid), even | 0x8000) << std::hex << "midpoint after 0x" << h;
    ASSERT_EQ(FloatToF16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(FloatToF16(std::nextafter(mid, 1e9f)), h + 1) << std::hex << h;
  }
}

TEST(F16, Subnormals) {
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie with zero: zero is even
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(FloatToF16(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(FloatToF16(3 * std::ldexp(1.0f, -25)), 0x0002);     // 1.5 units: tie to even
  EXPECT_EQ(FloatToF16(1023 * std::ldexp(1.0f, -24)), 0x03FF);  // largest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x83FF), -1023 * std::ldexp(1.0f, -24));
}

TEST(F16, OverflowsToInfinity) {
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65519.99f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7C00);  // tie between 65504 and 2^16: rounds up to inf
  EXPECT_EQ(FloatToF16(1e10f), 0x7C00);
  EXPECT_EQ(FloatToF16(-1e10f), 0xFC00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::max()), 0x7C00);
}

TEST(F16, NanStaysNan) {
  for (uint32_t b : {0x7FC00000u, 0x7F800001u, 0xFFC00000u}) {
    const uint16_t h = FloatToF16(BitsToFloat(b));
    EXPECT_EQ(h & 0x7C00, 0x7C00) << std::hex << b;
    EXPECT_NE(h & 0x03FF, 0) << std::hex << b;
  }
}

// ---------------------------------------------------------------------------------------------
// Names and sizes
// ---------------------------------------------------------------------------------------------

TEST(DTypeNames, EverySafetensorsDtype) {
  struct Row {
    const char* name;
    DType dtype;
    int size;
  };
  const Row rows[] = {
      {"BOOL", DType::kBool, 1}, {"U8", DType::kU8, 1},          {"I8", DType::kI8, 1},
      {"I16", DType::kI16, 2},   {"U16", DType::kU16, 2},        {"F16", DType::kF16, 2},
      {"BF16", DType::kBF16, 2}, {"I32", DType::kI32, 4},        {"U32", DType::kU32, 4},
      {"F32", DType::kF32, 4},   {"F64", DType::kF64, 8},        {"I64", DType::kI64, 8},
      {"U64", DType::kU64, 8},   {"F8_E4M3", DType::kF8E4M3, 1}, {"F8_E5M2", DType::kF8E5M2, 1},
  };
  for (const Row& r : rows) {
    const auto parsed = ParseDType(r.name);
    ASSERT_TRUE(parsed.has_value()) << r.name;
    EXPECT_EQ(*parsed, r.dtype) << r.name;
    EXPECT_EQ(DTypeName(r.dtype), r.name);
    EXPECT_EQ(DTypeSize(r.dtype), r.size) << r.name;
  }
}

TEST(DTypeNames, UnknownStringsAreNullopt) {
  for (const char* s : {"", "f32", "bf16", "FLOAT", "float32", "F8_E4M3FN", "F8E4M3", "BF16 ",
                        " F32", "F128", "I4", "E4M3"}) {
    EXPECT_FALSE(ParseDType(s).has_value()) << "'" << s << "'";
  }
  EXPECT_FALSE(ParseDType(std::string("F32\0", 4)).has_value());
}

// ---------------------------------------------------------------------------------------------
// The kernels' own FP8 decoders (one per ISA) against the definition.
// ---------------------------------------------------------------------------------------------

// An FP8 weight over caller-owned bytes with unit scales.
Weight Fp8Weight(const std::vector<uint8_t>& bytes, int64_t rows, int64_t cols,
                 const std::vector<float>& scales) {
  Weight w;
  w.dtype = DType::kF8E4M3;
  w.rows = rows;
  w.cols = cols;
  w.data = bytes.data();
  w.scale_inv = scales.data();
  w.block_rows = 128;
  w.block_cols = 128;
  return w;
}

TEST(Fp8Kernels, DecodeRowsReproducesTheTable) {
  // [16, 256]: every row holds all 256 codes, rotated so each code sits in every column group.
  const int64_t rows = 16, cols = 256;
  std::vector<uint8_t> bytes(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) bytes[r * cols + c] = static_cast<uint8_t>(c + 17 * r);
  }
  const std::vector<float> scales(1 * 2, 1.0f);
  const Weight w = Fp8Weight(bytes, rows, cols, scales);
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(std::string(IsaName(isa)));
    std::vector<float> out(rows * cols, 12345.0f);
    GetPrimitives(isa).decode_rows(w, 0, rows, out.data());
    for (int64_t i = 0; i < rows * cols; ++i) {
      ASSERT_TRUE(SameValue(Fp8E4M3ToFloat(bytes[i]), out[i])) << "table vs kernel at " << i;
      ASSERT_TRUE(SameValue(E4M3Definition(bytes[i]), out[i]))
          << "code " << int{bytes[i]} << " at " << i << " decoded to " << out[i];
    }
    // A sub-range writes only its own rows.
    std::vector<float> part(3 * cols, 12345.0f);
    GetPrimitives(isa).decode_rows(w, 5, 8, part.data());
    for (int64_t i = 0; i < 3 * cols; ++i) {
      ASSERT_TRUE(SameValue(E4M3Definition(bytes[5 * cols + i]), part[i])) << i;
    }
  }
}

// gemv/gemm over a [256, 256] weight whose diagonal holds code r in row r (zeros elsewhere):
// one-hot x = e_t gives y[t][t] = value of code t exactly. Off the diagonal the result is 0,
// except in the two NaN rows, where NaN * 0 is NaN (IEEE) for every token.
void CheckDiagonal(const std::vector<float>& y, int64_t t0, int64_t T, int64_t n) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < n; ++r) {
      const int64_t code = t0 + t;
      const float got = y[t * n + r];
      if (r == code) {
        ASSERT_TRUE(std::isnan(E4M3Definition(r)) ? std::isnan(got) : got == E4M3Definition(r))
            << "code " << r << " gave " << got;
      } else if ((r & 0x7F) == 0x7F) {
        ASSERT_TRUE(std::isnan(got)) << "row " << r << " token " << code;
      } else {
        ASSERT_EQ(got, 0.0f) << "row " << r << " token " << code;
      }
    }
  }
}

TEST(Fp8Kernels, GemvAndGemmRowsReproduceTheTable) {
  const int64_t n = 256;
  std::vector<uint8_t> bytes(n * n, 0);
  for (int64_t r = 0; r < n; ++r) bytes[r * n + r] = static_cast<uint8_t>(r);
  const std::vector<float> scales(2 * 2, 1.0f);
  const Weight w = Fp8Weight(bytes, n, n, scales);
  for (Isa isa : SupportedIsas()) {
    SCOPED_TRACE(std::string(IsaName(isa)));
    const auto& prims = GetPrimitives(isa);
    for (int64_t T : {1, 2, 3, 4, 6}) {
      SCOPED_TRACE("T=" + std::to_string(T));
      for (int64_t t0 = 0; t0 < n; t0 += T) {
        const int64_t tn = std::min(T, n - t0);
        std::vector<float> x(tn * n, 0.0f);
        for (int64_t t = 0; t < tn; ++t) x[t * n + t0 + t] = 1.0f;
        std::vector<float> y(tn * n, 12345.0f);
        prims.gemv_rows(w, 0, n, x.data(), n, tn, y.data(), n);
        CheckDiagonal(y, t0, tn, n);
        std::fill(y.begin(), y.end(), 12345.0f);
        for (int64_t r0 = 0; r0 < n; r0 += prims.panel_rows) {
          const int64_t r1 = std::min(n, r0 + prims.panel_rows);
          prims.gemm_rows(w, r0, r1, x.data(), n, tn, y.data() + r0, n);
        }
        CheckDiagonal(y, t0, tn, n);
      }
    }
  }
}

}  // namespace
}  // namespace dserve
