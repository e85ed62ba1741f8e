#include "core/dtype.h"

#include <array>
#include <cmath>

namespace dserve {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
};

constexpr std::array<DTypeInfo, 15> kDTypes = {{
    {DType::kBool, "BOOL"},
    {DType::kU8, "U8"},
    {DType::kI8, "I8"},
    {DType::kI16, "I16"},
    {DType::kU16, "U16"},
    {DType::kF16, "F16"},
    {DType::kBF16, "BF16"},
    {DType::kI32, "I32"},
    {DType::kU32, "U32"},
    {DType::kF32, "F32"},
    {DType::kF64, "F64"},
    {DType::kI64, "I64"},
    {DType::kU64, "U64"},
    {DType::kF8E4M3, "F8_E4M3"},
    {DType::kF8E5M2, "F8_E5M2"},
}};

const DTypeInfo& Info(DType dtype) { return kDTypes[static_cast<int>(dtype)]; }

// Value of an E4M3fn byte from the definition: bias 7, 3 mantissa bits, subnormals at
// exponent 0, and only S.1111.111 reserved for NaN.
float DecodeE4M3(uint8_t b) {
  const int sign = b >> 7;
  const int exponent = (b >> 3) & 0xF;
  const int mantissa = b & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return std::nanf("");
  float magnitude = exponent == 0 ? std::ldexp(mantissa / 8.0f, -6)
                                  : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  return sign ? -magnitude : magnitude;
}

const std::array<float, 256>& E4M3Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = DecodeE4M3(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

}  // namespace

std::string_view DTypeName(DType dtype) { return Info(dtype).name; }

std::optional<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

uint16_t FloatToBf16(float f) {
  uint32_t bits = FloatToBits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  const int exponent = (h >> 10) & 0x1F;
  const int mantissa = h & 0x3FF;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 0x1F) {
    magnitude = mantissa ? std::nanf("") : INFINITY;
  } else {
    magnitude = std::ldexp(1.0f + mantissa / 1024.0f, exponent - 15);
  }
  return BitsToFloat(FloatToBits(magnitude) | sign);
}

uint16_t FloatToF16(float f) {
  const uint16_t sign = static_cast<uint16_t>((FloatToBits(f) >> 16) & 0x8000);
  if (std::isnan(f)) return sign | 0x7E00;
  const float a = std::fabs(f);
  if (a >= 65520.0f) return sign | 0x7C00;  // rounds to infinity
  if (a < std::ldexp(1.0f, -14)) {
    // Subnormal: units of 2^-24, nearbyint rounds half to even.
    return sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24)));
  }
  int exponent;
  std::frexp(a, &exponent);  // a = m * 2^exponent, m in [0.5, 1)
  const float scaled = std::ldexp(a, 11 - exponent);  // 11 significant bits as an integer
  uint32_t significand = static_cast<uint32_t>(std::nearbyint(scaled));
  int biased = exponent - 1 + 15;
  if (significand == 2048) {  // rounding carried into the next binade
    significand = 1024;
    ++biased;
  }
  if (biased >= 31) return sign | 0x7C00;
  return sign | static_cast<uint16_t>((biased << 10) | (significand - 1024));
}

float Fp8E4M3ToFloat(uint8_t b) { return E4M3Table()[b]; }

uint8_t FloatToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7F;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7E;
  // Smallest normal is 2^-6; below it the grid is uniform with step 2^-9.
  if (a < std::ldexp(1.0f, -6)) {
    const int units = static_cast<int>(std::nearbyint(std::ldexp(a, 9)));  // 0..8
    return sign | static_cast<uint8_t>(units);  // 8 units == 2^-6, encoded as exponent 1
  }
  int exponent;
  std::frexp(a, &exponent);  // a = m * 2^exponent, m in [0.5, 1)
  int significand = static_cast<int>(std::nearbyint(std::ldexp(a, 4 - exponent)));  // 8..16
  int biased = exponent - 1 + 7;
  if (significand == 16) {
    significand = 8;
    ++biased;
  }
  const int code = (biased << 3) | (significand - 8);
  return sign | static_cast<uint8_t>(code > 0x7E ? 0x7E : code);
}

}  // namespace dserve
