#include "engine/chat/lexer.h"
#include "core/utf8.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/chat/errors.h"
#include "engine/chat/py_unicode.h"

namespace dserve::engine::jinja {
namespace {

absl::Status SyntaxError(int line, std::string_view message) {
  return AtLine(PyError("TemplateSyntaxError", message), line);
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

// Length of the UTF-8 sequence starting with byte b.
size_t Utf8Len(char b) {
  const auto u = static_cast<unsigned char>(b);
  return u < 0x80 ? 1 : (u & 0xE0) == 0xC0 ? 2 : (u & 0xF0) == 0xE0 ? 3 : 4;
}

char32_t CodePointAt(std::string_view s, size_t pos) {
  return DecodeUtf8(s.substr(pos, Utf8Len(s[pos])))[0];
}

// Python's str.rstrip(): whitespace is Unicode whitespace.
std::string_view RStripSpace(std::string_view text) {
  const std::u32string cps = DecodeUtf8(text);
  size_t end = cps.size();
  while (end > 0 && IsPySpace(cps[end - 1])) --end;
  size_t bytes = 0;
  for (size_t i = 0; i < end; ++i) bytes += Utf8Len(text[bytes]);
  return text.substr(0, bytes);
}

bool AllSpace(std::string_view text) {
  if (text.empty()) return false;
  for (char32_t c : DecodeUtf8(text)) {
    if (!IsPySpace(c)) return false;
  }
  return true;
}

// jinja2's keep_trailing_newline=False and newline normalisation: \r\n and \r become \n, and
// one trailing newline is dropped.
std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// `\d+(_\d+)*` at pos: returns the end, or pos when there is no digit.
size_t MatchDigits(std::string_view s, size_t pos) {
  if (pos >= s.size() || !IsDigit(s[pos])) return pos;
  size_t p = pos;
  while (p < s.size() && IsDigit(s[p])) ++p;
  while (p + 1 < s.size() && s[p] == '_' && IsDigit(s[p + 1])) {
    ++p;
    while (p < s.size() && IsDigit(s[p])) ++p;
  }
  return p;
}

// `e[+-]?digits` at pos; returns the end or pos.
size_t MatchExponent(std::string_view s, size_t pos) {
  if (pos >= s.size() || (s[pos] != 'e' && s[pos] != 'E')) return pos;
  size_t p = pos + 1;
  if (p < s.size() && (s[p] == '+' || s[p] == '-')) ++p;
  const size_t end = MatchDigits(s, p);
  return end == p ? pos : end;
}

// jinja2's float_re at pos (not preceded by '.'); returns the end or pos.
size_t MatchFloat(std::string_view s, size_t pos) {
  if (pos > 0 && s[pos - 1] == '.') return pos;
  const size_t mantissa = MatchDigits(s, pos);
  if (mantissa == pos) return pos;
  size_t fraction = mantissa;
  if (mantissa < s.size() && s[mantissa] == '.') {
    const size_t end = MatchDigits(s, mantissa + 1);
    if (end != mantissa + 1) fraction = end;
  }
  if (fraction != mantissa) {
    const size_t exp = MatchExponent(s, fraction);
    if (exp != fraction) return exp;
  }
  const size_t exp = MatchExponent(s, mantissa);
  if (exp != mantissa) return exp;
  // Digits alone are an integer, not a float.
  return fraction != mantissa ? fraction : pos;
}

// jinja2's integer_re at pos; returns the end or pos. Sets *base.
size_t MatchInteger(std::string_view s, size_t pos, int* base) {
  auto digits_of = [&](size_t p, auto is_digit) {
    size_t q = p;
    while (q < s.size()) {
      if (is_digit(s[q])) {
        ++q;
      } else if (s[q] == '_' && q + 1 < s.size() && is_digit(s[q + 1])) {
        q += 2;
      } else {
        break;
      }
    }
    return q;
  };
  if (pos + 1 < s.size() && s[pos] == '0') {
    const char k = static_cast<char>(s[pos + 1] | 0x20);
    auto bin = [](char c) { return c == '0' || c == '1'; };
    auto oct = [](char c) { return c >= '0' && c <= '7'; };
    auto hex = [](char c) { return IsDigit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); };
    size_t end = pos + 2;
    if (k == 'b') end = digits_of(pos + 2, bin), *base = 2;
    if (k == 'o') end = digits_of(pos + 2, oct), *base = 8;
    if (k == 'x') end = digits_of(pos + 2, hex), *base = 16;
    if ((k == 'b' || k == 'o' || k == 'x') && end > pos + 2) return end;
  }
  *base = 10;
  if (pos >= s.size() || !IsDigit(s[pos])) return pos;
  if (s[pos] == '0') {
    return digits_of(pos + 1, [](char c) { return c == '0'; });
  }
  return digits_of(pos + 1, IsDigit);
}

constexpr std::string_view kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                           "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                           ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};

// Decodes a string literal's body as jinja2 does (Python's unicode-escape after
// backslash-replacing non-ASCII characters).
absl::StatusOr<std::string> DecodeStringLiteral(std::string_view body, int line) {
  const std::u32string s = DecodeUtf8(body);
  std::string out;
  auto hex_value = [&](size_t start, size_t count, char32_t* value) {
    if (start + count > s.size()) return false;
    *value = 0;
    for (size_t k = start; k < start + count; ++k) {
      const char32_t c = s[k];
      int d;
      if (c >= '0' && c <= '9') {
        d = static_cast<int>(c - '0');
      } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
        d = static_cast<int>((c | 0x20) - 'a' + 10);
      } else {
        return false;
      }
      *value = *value * 16 + static_cast<char32_t>(d);
    }
    return true;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      AppendUtf8(s[i], &out);
      continue;
    }
    const char32_t n = s[++i];
    switch (n) {
      case '\n':
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t count = n == 'x' ? 2 : n == 'u' ? 4 : 8;
        char32_t value;
        if (!hex_value(i + 1, count, &value)) {
          return SyntaxError(line,
                             absl::StrCat("truncated \\", std::string(1, static_cast<char>(n)),
                                          " escape in a string literal"));
        }
        if (value > 0x10FFFF) return SyntaxError(line, "illegal Unicode character in a string");
        if (value >= 0xD800 && value <= 0xDFFF) {
          return AtLine(Unsupported("a lone surrogate escape in a string literal"), line);
        }
        AppendUtf8(value, &out);
        i += count;
        break;
      }
      case 'N':
        return AtLine(Unsupported("the \\N{...} escape in a string literal"), line);
      default:
        if (n >= '0' && n <= '7') {
          char32_t value = n - '0';
          for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) {
            value = value * 8 + (s[++i] - '0');
          }
          AppendUtf8(value, &out);
        } else if (n >= 0x80) {
          // backslashreplace turned the character into \xhh, \uhhhh or \Uhhhhhhhh, and the
          // backslash before it escaped that backslash: the text stays literal.
          char buf[16];
          if (n <= 0xFF) {
            std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(n));
          } else if (n <= 0xFFFF) {
            std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(n));
          } else {
            std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(n));
          }
          out.append(buf);
        } else {
          out.push_back('\\');
          AppendUtf8(n, &out);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : s_(std::move(source)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < s_.size()) {
      absl::Status st = RootStep();
      if (!st.ok()) return st;
    }
    Emit(TokenType::kEof, "");
    return std::move(tokens_);
  }

 private:
  void Emit(TokenType type, std::string value) {
    tokens_.push_back(Token{type, std::move(value), line_});
  }
  // Consumes s_[pos_, end), counting lines.
  void Advance(size_t end) {
    for (size_t i = pos_; i < end; ++i) {
      if (s_[i] == '\n') ++line_;
    }
    pos_ = end;
  }
  bool At(size_t p, std::string_view text) const { return s_.compare(p, text.size(), text) == 0; }
  size_t SkipSpace(size_t p) const {
    while (p < s_.size() && IsPySpace(CodePointAt(s_, p))) p += Utf8Len(s_[p]);
    return p;
  }

  // Text before a tag, with the tag's whitespace control applied; emitted if non-empty.
  void EmitText(size_t end, char sign, bool lstrip) {
    std::string_view text = std::string_view(s_).substr(pos_, end - pos_);
    if (sign == '-') {
      text = RStripSpace(text);
    } else if (sign != '+' && lstrip) {
      const size_t nl = text.rfind('\n');
      const size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && AllSpace(text.substr(l_pos))) {
        text = text.substr(0, l_pos);
      }
    }
    const int line = line_;
    Advance(end);
    if (!text.empty()) tokens_.push_back(Token{TokenType::kData, std::string(text), line});
  }

  absl::Status RootStep() {
    size_t tag = pos_;
    while (true) {
      tag = s_.find('{', tag);
      if (tag == std::string::npos || tag + 1 >= s_.size()) {
        EmitText(s_.size(), 0, false);
        return absl::OkStatus();
      }
      const char k = s_[tag + 1];
      if (k == '{' || k == '%' || k == '#') break;
      ++tag;
    }
    const char kind = s_[tag + 1];
    size_t after = tag + 2;
    char sign = 0;
    if (after < s_.size() && (s_[after] == '-' || s_[after] == '+')) sign = s_[after++];
    if (kind == '%') {
      size_t raw_end;
      if (MatchRawBegin(after, &raw_end)) {
        EmitText(tag, sign, true);
        line_starting_ = s_[raw_end - 1] == '\n';
        Advance(raw_end);
        return RawBody();
      }
    }
    EmitText(tag, sign, kind != '{');
    Advance(after);
    if (kind == '#') return Comment();
    return Tag(kind == '%');
  }

  // `\s*raw\s*(-%}\s*|%})` after "{%" and its sign.
  bool MatchRawBegin(size_t p, size_t* end) const {
    p = SkipSpace(p);
    if (!At(p, "raw") || (p + 3 < s_.size() && IsNameChar(s_[p + 3]))) return false;
    p = SkipSpace(p + 3);
    if (At(p, "-%}")) {
      *end = SkipSpace(p + 3);
      return true;
    }
    if (At(p, "%}")) {
      *end = p + 2;
      return true;
    }
    return false;
  }

  absl::Status RawBody() {
    for (size_t p = s_.find("{%", pos_); p != std::string::npos; p = s_.find("{%", p + 1)) {
      size_t q = p + 2;
      char sign = 0;
      if (q < s_.size() && (s_[q] == '-' || s_[q] == '+')) sign = s_[q++];
      q = SkipSpace(q);
      if (!At(q, "endraw")) continue;
      q = SkipSpace(q + 6);
      size_t end;
      if (At(q, "+%}")) {
        end = q + 3;
      } else if (At(q, "-%}")) {
        end = SkipSpace(q + 3);
      } else if (At(q, "%}")) {
        end = q + 2 + (At(q + 2, "\n") ? 1 : 0);
      } else {
        continue;
      }
      EmitText(p, sign, true);
      line_starting_ = s_[end - 1] == '\n';
      Advance(end);
      return absl::OkStatus();
    }
    return SyntaxError(line_, "Missing end of raw directive");
  }

  absl::Status Comment() {
    for (size_t p = pos_; p + 1 < s_.size(); ++p) {
      size_t end = 0;
      if (At(p, "+#}")) {
        end = p + 3;
      } else if (At(p, "-#}")) {
        end = SkipSpace(p + 3);
      } else if (At(p, "#}")) {
        end = p + 2 + (At(p + 2, "\n") ? 1 : 0);
      } else {
        continue;
      }
      line_starting_ = s_[end - 1] == '\n';
      Advance(end);
      return absl::OkStatus();
    }
    return SyntaxError(line_, "Missing end of comment tag");
  }

  // The inside of {{ ... }} or {% ... %}, through its end marker.
  absl::Status Tag(bool block) {
    Emit(block ? TokenType::kBlockBegin : TokenType::kVariableBegin, "");
    std::vector<char> balancing;
    while (true) {
      if (pos_ >= s_.size()) {
        return SyntaxError(line_, absl::StrCat("unexpected end of template, expected end of ",
                                               block ? "statement" : "print statement"));
      }
      if (balancing.empty()) {
        size_t end = 0;
        if (block) {
          if (At(pos_, "+%}")) {
            end = pos_ + 3;
          } else if (At(pos_, "-%}")) {
            end = SkipSpace(pos_ + 3);
          } else if (At(pos_, "%}")) {
            end = pos_ + 2 + (At(pos_ + 2, "\n") ? 1 : 0);
          }
        } else if (At(pos_, "-}}")) {
          end = SkipSpace(pos_ + 3);
        } else if (At(pos_, "}}")) {
          end = pos_ + 2;
        }
        if (end != 0) {
          Emit(block ? TokenType::kBlockEnd : TokenType::kVariableEnd, "");
          line_starting_ = s_[end - 1] == '\n';
          Advance(end);
          return absl::OkStatus();
        }
      }
      absl::Status st = ExpressionToken(&balancing);
      if (!st.ok()) return st;
    }
  }

  absl::Status ExpressionToken(std::vector<char>* balancing) {
    const char c = s_[pos_];
    if (IsPySpace(CodePointAt(s_, pos_))) {
      Advance(SkipSpace(pos_));
      return absl::OkStatus();
    }
    if (size_t end = MatchFloat(s_, pos_); end != pos_) {
      std::string text;
      for (size_t i = pos_; i < end; ++i) {
        if (s_[i] != '_') text.push_back(s_[i]);
      }
      Token t{TokenType::kFloat, s_.substr(pos_, end - pos_), line_};
      t.float_value = std::strtod(text.c_str(), nullptr);
      tokens_.push_back(std::move(t));
      Advance(end);
      return absl::OkStatus();
    }
    int base = 10;
    if (size_t end = MatchInteger(s_, pos_, &base); end != pos_) {
      std::string digits;
      for (size_t i = pos_ + (base == 10 ? 0 : 2); i < end; ++i) {
        if (s_[i] != '_') digits.push_back(s_[i]);
      }
      errno = 0;
      const long long v = std::strtoll(digits.c_str(), nullptr, base);
      if (errno == ERANGE) {
        return AtLine(Unsupported(absl::StrCat("the integer literal ", s_.substr(pos_, end - pos_),
                                               " (beyond 64 bits)")),
                      line_);
      }
      Token t{TokenType::kInteger, s_.substr(pos_, end - pos_), line_};
      t.int_value = v;
      tokens_.push_back(std::move(t));
      Advance(end);
      return absl::OkStatus();
    }
    if (IsNameStart(c)) {
      size_t end = pos_;
      while (end < s_.size() && IsNameChar(s_[end])) ++end;
      Emit(TokenType::kName, s_.substr(pos_, end - pos_));
      Advance(end);
      return absl::OkStatus();
    }
    if (c == '\'' || c == '"') return StringToken(c);
    for (std::string_view op : kOperators) {
      if (!At(pos_, op)) continue;
      if (op == "(" || op == "[" || op == "{") {
        balancing->push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
      } else if (op == ")" || op == "]" || op == "}") {
        if (balancing->empty()) {
          return SyntaxError(line_, absl::StrCat("unexpected '", Sv(op), "'"));
        }
        if (balancing->back() != op[0]) {
          return SyntaxError(line_, absl::StrCat("unexpected '", Sv(op), "', expected '",
                                                 std::string(1, balancing->back()), "'"));
        }
        balancing->pop_back();
      }
      Emit(TokenType::kOperator, std::string(op));
      Advance(pos_ + op.size());
      return absl::OkStatus();
    }
    return SyntaxError(line_, absl::StrCat("unexpected char '", s_.substr(pos_, Utf8Len(c)), "'"));
  }

  absl::Status StringToken(char quote) {
    size_t p = pos_ + 1;
    while (p < s_.size() && s_[p] != quote) {
      p += s_[p] == '\\' ? 2 : 1;
    }
    if (p >= s_.size()) return SyntaxError(line_, "unexpected end of string");
    absl::StatusOr<std::string> value =
        DecodeStringLiteral(std::string_view(s_).substr(pos_ + 1, p - pos_ - 1), line_);
    if (!value.ok()) return value.status();
    Emit(TokenType::kString, *std::move(value));
    Advance(p + 1);
    return absl::OkStatus();
  }

  std::string s_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) {
  if (!IsValidUtf8(source)) {
    return absl::InvalidArgumentError("chat template is not valid UTF-8");
  }
  return Lexer(NormalizeNewlines(source)).Run();
}

std::string DescribeToken(const Token& token) {
  switch (token.type) {
    case TokenType::kData:
      return "template data";
    case TokenType::kVariableBegin:
      return "begin of print statement";
    case TokenType::kVariableEnd:
      return "end of print statement";
    case TokenType::kBlockBegin:
      return "begin of statement block";
    case TokenType::kBlockEnd:
      return "end of statement block";
    case TokenType::kName:
      return absl::StrCat("name '", token.value, "'");
    case TokenType::kString:
      return "string literal";
    case TokenType::kInteger:
      return absl::StrCat("integer ", token.value);
    case TokenType::kFloat:
      return absl::StrCat("float ", token.value);
    case TokenType::kOperator:
      return absl::StrCat("'", token.value, "'");
    case TokenType::kEof:
      return "end of template";
  }
  return "token";
}

}  // namespace dserve::engine::jinja
