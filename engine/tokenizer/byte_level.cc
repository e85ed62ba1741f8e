#include "engine/tokenizer/byte_level.h"

#include "core/utf8.h"

namespace dserve::engine {

const std::array<uint32_t, 256>& ByteToCodePoint() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? static_cast<uint32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int CodePointToByte(uint32_t cp) {
  static const std::array<int16_t, 512> inverse = [] {
    std::array<int16_t, 512> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[ByteToCodePoint()[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(ByteToCodePoint()[b], &out);
  return out;
}

bool ByteLevelToBytes(std::string_view text, std::string* bytes) {
  for (size_t i = 0; i < text.size();) {
    const int n = ValidSequenceLength(text, i);
    if (n == 0) return false;
    const int b = CodePointToByte(DecodeCodePoint(text, i, n));
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
    i += n;
  }
  return true;
}

}  // namespace dserve::engine
