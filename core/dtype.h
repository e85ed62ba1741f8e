// Element types as safetensors names them, and exact scalar conversions between them.
// The FP8 format is E4M3 "fn" (no infinities; 0x7F/0xFF are NaN; max 448), as DeepSeek ships.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace dserve {

enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
  kF8E4M3,
  kF8E5M2,
};

// Bytes per element (inline: kernels call it per row).
inline int DTypeSize(DType dtype) {
  constexpr int kSizes[] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1};
  return kSizes[static_cast<int>(dtype)];
}
// The safetensors spelling ("F8_E4M3", "BF16", ...).
std::string_view DTypeName(DType dtype);
// Parses a safetensors dtype string; nullopt when it is not one.
std::optional<DType> ParseDType(std::string_view name);

inline float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float Bf16ToFloat(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }
// Round to nearest even, NaN stays NaN (quiet).
uint16_t FloatToBf16(float f);

float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

// E4M3fn decode through a 256-entry table built from the format's definition.
float Fp8E4M3ToFloat(uint8_t b);
// Round to nearest even; saturates finite values beyond ±448 to ±448 (as DeepSeek's
// quantisers clamp before casting); NaN maps to 0x7F.
uint8_t FloatToFp8E4M3(float f);

}  // namespace dserve
