// Python's text forms of scalars: float.__repr__ (shortest round-trip digits), str.__repr__
// (quote choice and escapes), json.dumps string escaping and markupsafe's HTML escaping, byte
// for byte.
#pragma once

#include <string>
#include <string_view>

namespace dserve::engine::jinja {

// repr(x) for a float: '1.0', '1e+16', '1e-05', 'nan', '-inf'.
std::string FormatFloat(double v);
// repr(s) for a str: quotes chosen as Python does, non-printable code points escaped.
std::string ReprString(std::string_view s);
// markupsafe.escape's text: & < > ' " as HTML entities.
std::string HtmlEscape(std::string_view text);
// Appends s as json.dumps writes a str (with the quotes); ensure_ascii escapes non-ASCII.
void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out);

}  // namespace dserve::engine::jinja
