// UTF-8 helpers (tokenizers, chat templates, tests): encoding and decoding code points,
// validating, and lossy decoding
// that replaces each maximal invalid subpart with U+FFFD — what Rust's from_utf8_lossy (Hugging
// Face tokenizers) and WHATWG TextDecoder (transformers.js) both do.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dserve {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

void AppendUtf8(uint32_t code_point, std::string* out);

// Length of the well-formed UTF-8 sequence at s[i], or 0 when the bytes there are not one.
int ValidSequenceLength(std::string_view s, size_t i);

// The code point of the well-formed `length`-byte sequence at s[i].
inline uint32_t DecodeCodePoint(std::string_view s, size_t i, int length) {
  uint32_t cp = static_cast<uint8_t>(s[i]);
  if (length > 1) {
    cp &= 0xFF >> (length + 1);
    for (int k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  }
  return cp;
}

// Offset of the first byte that is not part of well-formed UTF-8, or npos.
size_t FindInvalidUtf8(std::string_view s);

// Appends s to out, replacing every maximal subpart of an ill-formed sequence with U+FFFD.
void AppendUtf8Lossy(std::string_view s, std::string* out);

// Bytes at the end of s that begin a well-formed sequence but stop before it is complete
// (0..3): a streaming decoder holds them back until the next bytes arrive.
int IncompleteTailLength(std::string_view s);

}  // namespace dserve
