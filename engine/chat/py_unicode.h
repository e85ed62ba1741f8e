// Python's str semantics over UTF-8 text: code-point decoding, whitespace, case mapping,
// printability and line splitting, so template strings behave exactly like CPython's.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dserve::engine::jinja {

bool IsValidUtf8(std::string_view text);
// Decodes text that IsValidUtf8 accepted.
std::u32string DecodeUtf8(std::string_view text);
std::string EncodeUtf8(std::u32string_view text);
// len(s): the number of code points.
size_t CodePointCount(std::string_view text);

// str.isspace() for one code point; also what the regex \s of jinja2's lexer matches.
bool IsPySpace(char32_t c);
// str.isprintable() for one code point (what repr() leaves unescaped).
bool IsPyPrintable(char32_t c);

// str.islower() and str.isupper().
bool PyIsLower(std::string_view text);
bool PyIsUpper(std::string_view text);

// str.lower(), str.upper(), str.title(), str.capitalize(): full case mappings
// (e.g. 'ß'.upper() == 'SS') and the Final_Sigma rule, as CPython implements them.
std::string PyLower(std::string_view text);
std::string PyUpper(std::string_view text);
std::string PyTitle(std::string_view text);
std::string PyCapitalize(std::string_view text);

// str.strip(chars) / lstrip / rstrip; chars == nullopt strips whitespace.
std::string PyStrip(std::string_view text, const std::optional<std::string>& chars, bool left,
                    bool right);
// str.splitlines(keepends): splits on \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029.
std::vector<std::string> PySplitLines(std::string_view text, bool keepends);

}  // namespace dserve::engine::jinja
