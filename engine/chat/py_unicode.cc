#include "engine/chat/py_unicode.h"

#include <algorithm>
#include <cstdint>
#include <span>

#include "core/utf8.h"

namespace dserve::engine::jinja {
namespace {

// A run of code points first..last (every `stride`-th one) that map to code point + delta.
struct CaseRun {
  char32_t first;
  char32_t last;
  int32_t delta;
  uint8_t stride;
};
// A code point whose mapping is two or three code points (zero-padded).
struct MultiCase {
  char32_t code_point;
  char32_t out[3];
};
struct CodeRange {
  char32_t first;
  char32_t last;
};

#include "engine/chat/unicode_tables.inc"

bool InRanges(std::span<const CodeRange> ranges, char32_t c) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), c,
                             [](char32_t v, const CodeRange& r) { return v < r.first; });
  return it != ranges.begin() && c <= std::prev(it)->last;
}

// Appends the mapping of c under (runs, multi); returns false when c has none there.
bool MapWith(std::span<const CaseRun> runs, std::span<const MultiCase> multi, char32_t c,
             std::u32string* out) {
  auto m = std::lower_bound(multi.begin(), multi.end(), c,
                            [](const MultiCase& e, char32_t v) { return e.code_point < v; });
  if (m != multi.end() && m->code_point == c) {
    for (char32_t o : m->out) {
      if (o != 0) out->push_back(o);
    }
    return true;
  }
  auto it = std::upper_bound(runs.begin(), runs.end(), c,
                             [](char32_t v, const CaseRun& r) { return v < r.first; });
  if (it == runs.begin()) return false;
  const CaseRun& r = *std::prev(it);
  if (c > r.last || (c - r.first) % r.stride != 0) return false;
  out->push_back(static_cast<char32_t>(static_cast<int32_t>(c) + r.delta));
  return true;
}

void Lower(char32_t c, std::u32string* out) {
  if (!MapWith(kLowerRuns, kLowerMulti, c, out)) out->push_back(c);
}
void Upper(char32_t c, std::u32string* out) {
  if (!MapWith(kUpperRuns, kUpperMulti, c, out)) out->push_back(c);
}
void Title(char32_t c, std::u32string* out) {
  if (!MapWith(kTitleRuns, kTitleMulti, c, out)) Upper(c, out);
}

bool IsCased(char32_t c) { return InRanges(kCasedRanges, c); }
bool IsCaseIgnorable(char32_t c) { return InRanges(kCaseIgnorableRanges, c); }

// CPython lowers U+03A3 to final sigma when a cased letter precedes it (skipping
// case-ignorables) and none follows it.
char32_t LowerSigma(const std::u32string& s, size_t i) {
  size_t j = i;
  char32_t c = 0;
  bool found = false;
  while (j > 0) {
    c = s[--j];
    if (!IsCaseIgnorable(c)) {
      found = true;
      break;
    }
  }
  bool final_sigma = found && IsCased(c);
  if (final_sigma) {
    for (j = i + 1; j < s.size(); ++j) {
      if (!IsCaseIgnorable(s[j])) break;
    }
    final_sigma = j == s.size() || !IsCased(s[j]);
  }
  return final_sigma ? 0x3C2 : 0x3C3;
}

void LowerAt(const std::u32string& s, size_t i, std::u32string* out) {
  if (s[i] == 0x3A3) {
    out->push_back(LowerSigma(s, i));
  } else {
    Lower(s[i], out);
  }
}

bool IsLineBreak(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) ||
         c == 0x85 || c == 0x2028 || c == 0x2029;
}

}  // namespace

bool IsValidUtf8(std::string_view text) { return FindInvalidUtf8(text) == std::string_view::npos; }

std::u32string DecodeUtf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const int n = ValidSequenceLength(text, i);
    out.push_back(DecodeCodePoint(text, i, n));
    i += n;
  }
  return out;
}

std::string EncodeUtf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) AppendUtf8(c, &out);
  return out;
}

size_t CodePointCount(std::string_view text) {
  size_t n = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool IsPyPrintable(char32_t c) { return !InRanges(kNonPrintableRanges, c); }

bool PyIsLower(std::string_view text) {
  bool cased = false;
  for (char32_t c : DecodeUtf8(text)) {
    if (InRanges(kUppercaseRanges, c) || InRanges(kTitlecaseRanges, c)) return false;
    if (InRanges(kLowercaseRanges, c)) cased = true;
  }
  return cased;
}

bool PyIsUpper(std::string_view text) {
  bool cased = false;
  for (char32_t c : DecodeUtf8(text)) {
    if (InRanges(kLowercaseRanges, c) || InRanges(kTitlecaseRanges, c)) return false;
    if (InRanges(kUppercaseRanges, c)) cased = true;
  }
  return cased;
}

std::string PyLower(std::string_view text) {
  const std::u32string s = DecodeUtf8(text);
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) LowerAt(s, i, &out);
  return EncodeUtf8(out);
}

std::string PyUpper(std::string_view text) {
  const std::u32string s = DecodeUtf8(text);
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) Upper(c, &out);
  return EncodeUtf8(out);
}

std::string PyTitle(std::string_view text) {
  const std::u32string s = DecodeUtf8(text);
  std::u32string out;
  out.reserve(s.size());
  bool previous_is_cased = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (previous_is_cased) {
      LowerAt(s, i, &out);
    } else {
      Title(s[i], &out);
    }
    previous_is_cased = IsCased(s[i]);
  }
  return EncodeUtf8(out);
}

std::string PyCapitalize(std::string_view text) {
  const std::u32string s = DecodeUtf8(text);
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 0) {
      Title(s[i], &out);
    } else {
      LowerAt(s, i, &out);
    }
  }
  return EncodeUtf8(out);
}

std::string PyStrip(std::string_view text, const std::optional<std::string>& chars, bool left,
                    bool right) {
  const std::u32string s = DecodeUtf8(text);
  const std::u32string set = chars ? DecodeUtf8(*chars) : std::u32string();
  auto strip = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : IsPySpace(c);
  };
  size_t begin = 0;
  size_t end = s.size();
  if (left) {
    while (begin < end && strip(s[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip(s[end - 1])) --end;
  }
  return EncodeUtf8(std::u32string_view(s).substr(begin, end - begin));
}

std::vector<std::string> PySplitLines(std::string_view text, bool keepends) {
  const std::u32string s = DecodeUtf8(text);
  std::vector<std::string> lines;
  size_t start = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (!IsLineBreak(s[i])) {
      ++i;
      continue;
    }
    size_t eol = i + 1;
    if (s[i] == '\r' && eol < s.size() && s[eol] == '\n') ++eol;
    lines.push_back(EncodeUtf8(std::u32string_view(s).substr(start, (keepends ? eol : i) - start)));
    start = i = eol;
  }
  if (start < s.size()) lines.push_back(EncodeUtf8(std::u32string_view(s).substr(start)));
  return lines;
}

}  // namespace dserve::engine::jinja
