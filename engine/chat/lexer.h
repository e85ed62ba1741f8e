// The template lexer: splits a chat template into text and the tokens inside {{ }} and {% %},
// applying jinja2's whitespace rules as Hugging Face configures them (trim_blocks,
// lstrip_blocks, `-`/`+` markers, comments and raw blocks dropped or turned into text).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::engine::jinja {

enum class TokenType {
  kData,           // template text, already whitespace-controlled
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,  // value: the decoded string
  kInteger,
  kFloat,
  kOperator,  // value: the operator text, e.g. "==", "|", "("
  kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string value;
  int line = 1;
  int64_t int_value = 0;
  double float_value = 0;
};

// Tokenizes source as jinja2 does with trim_blocks=True, lstrip_blocks=True and
// keep_trailing_newline=False. The last token is kEof. Errors name the line.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

// A readable name for a token in parse errors: "end of print statement", "'|'", "name 'x'".
std::string DescribeToken(const Token& token);

}  // namespace dserve::engine::jinja
