#include "core/utf8.h"

namespace dserve {
namespace {

// Valid range of the second byte after a lead byte (Unicode table 3-7): this is what makes
// overlong forms, surrogates and code points above U+10FFFF ill-formed at their second byte.
bool SecondByteOk(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

// Bytes a sequence starting with this lead byte needs, or 0 for a byte that cannot lead.
int SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// How many bytes from s[i] form a valid prefix of a sequence (at least 1 for a lead byte),
// and whether that prefix is the complete sequence.
int ValidPrefix(std::string_view s, size_t i, bool* complete) {
  const uint8_t lead = static_cast<uint8_t>(s[i]);
  const int need = SequenceLength(lead);
  *complete = need == 1;
  if (need <= 1) return need;
  int have = 1;
  while (have < need && i + have < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[i + have]);
    const bool ok = have == 1 ? SecondByteOk(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++have;
  }
  *complete = have == need;
  return have;
}

}  // namespace

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int ValidSequenceLength(std::string_view s, size_t i) {
  bool complete;
  const int n = ValidPrefix(s, i, &complete);
  return complete ? n : 0;
}

size_t FindInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = ValidSequenceLength(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

void AppendUtf8Lossy(std::string_view s, std::string* out) {
  size_t i = 0, run = 0;  // [run, i) is valid and not yet copied
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool complete;
    const int n = ValidPrefix(s, i, &complete);
    if (complete) {
      i += n;
      continue;
    }
    out->append(s.substr(run, i - run));
    out->append(kReplacementChar);
    i += n == 0 ? 1 : n;  // the maximal subpart: a valid prefix, or one byte
    run = i;
  }
  out->append(s.substr(run));
}

int IncompleteTailLength(std::string_view s) {
  // A sequence is at most 4 bytes, so only a lead byte in the last 3 can start an open one.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const size_t i = s.size() - back;
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation: keep looking for its lead
    bool complete;
    const int n = ValidPrefix(s, i, &complete);
    return !complete && n == static_cast<int>(back) ? static_cast<int>(back) : 0;
  }
  return 0;
}

}  // namespace dserve
