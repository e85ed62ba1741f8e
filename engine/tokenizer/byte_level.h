// The byte-level alphabet of GPT-2-style BPE: every byte gets a printable code point (bytes
// that are printable Latin-1 keep theirs, the others are moved to U+0100 onwards), so a
// vocabulary of strings can cover arbitrary bytes.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace dserve::engine {

// Code point standing for each byte.
const std::array<uint32_t, 256>& ByteToCodePoint();
// The byte a code point stands for, or -1 when it is not in the alphabet.
int CodePointToByte(uint32_t code_point);

// The byte-level spelling (UTF-8) of raw bytes.
std::string BytesToByteLevel(std::string_view bytes);
// Raw bytes of a byte-level string; false when some character is outside the alphabet.
bool ByteLevelToBytes(std::string_view text, std::string* bytes);

}  // namespace dserve::engine
