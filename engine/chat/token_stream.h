// The token cursor the parsers share: lookahead, matching of operators and names, and syntax
// errors that name what was expected and the line.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/errors.h"
#include "engine/chat/lexer.h"

namespace dserve::engine::jinja {

using EndTokens = std::initializer_list<std::string_view>;

// Limits on how deeply a template may nest: the parser and the renderer recurse on its
// structure, so deeper input would exhaust the stack (jinja2 itself stops far earlier, at
// Python's recursion limit).
inline constexpr int kMaxNesting = 128;    // parentheses, tags, not/-/else chains
inline constexpr int kMaxExprDepth = 300;  // expression tree height (e.g. a + b + c + ...)

class TokenStream {
 public:
  explicit TokenStream(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Look() const { return tokens_[pos_ + 1 < tokens_.size() ? pos_ + 1 : pos_]; }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const {
    return Cur().type == TokenType::kOperator && Cur().value == op;
  }
  bool IsName(std::string_view name) const {
    return Cur().type == TokenType::kName && Cur().value == name;
  }
  bool IsAnyName(EndTokens names) const {
    for (std::string_view n : names) {
      if (IsName(n)) return true;
    }
    return false;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  absl::Status Fail(std::string_view message, int line) const {
    return AtLine(PyError("TemplateSyntaxError", message), line);
  }
  absl::Status Unexpected(std::string_view expected) const {
    return Fail(absl::StrCat("expected ", Sv(expected), ", got ", DescribeToken(Cur())),
                Cur().line);
  }
  absl::Status ExpectOp(std::string_view op) {
    if (!SkipOp(op)) return Unexpected(absl::StrCat("'", Sv(op), "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectType(TokenType type) {
    if (Cur().type != type) {
      Token want;
      want.type = type;
      return Unexpected(DescribeToken(want));
    }
    Next();
    return absl::OkStatus();
  }
  // Counts one level of recursive parsing for as long as it lives.
  class NestingGuard {
   public:
    explicit NestingGuard(TokenStream* ts) : ts_(ts) { ++ts_->nesting_; }
    ~NestingGuard() { --ts_->nesting_; }
    absl::Status Check() const {
      if (ts_->nesting_ <= kMaxNesting) return absl::OkStatus();
      return ts_->Fail(absl::StrCat("template nested more than ", kMaxNesting, " levels deep"),
                       ts_->Cur().line);
    }

   private:
    TokenStream* ts_;
  };

  absl::StatusOr<std::string> ExpectName() {
    if (Cur().type != TokenType::kName) return Unexpected("a name");
    std::string name = Cur().value;
    Next();
    return name;
  }

 private:
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int nesting_ = 0;
};

}  // namespace dserve::engine::jinja
