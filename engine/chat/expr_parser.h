// Expressions of the template language, parsed with jinja2's precedence: or < and < not <
// comparisons (chained, `in`, `not in`) < + - < ~ < * / // % < ** < unary - + < filters, tests and
// calls < subscripts and attributes. -2**2 is 4 and 'a' + x | tojson filters only x, as in jinja2.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat/ast.h"
#include "engine/chat/token_stream.h"

namespace dserve::engine::jinja {

class ExprParser : public TokenStream {
 public:
  explicit ExprParser(std::vector<Token> tokens) : TokenStream(std::move(tokens)) {}

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr);
  // Comma-separated expressions: one without a comma is itself, otherwise a tuple. simplified:
  // primaries only (assignment targets). extra_end: names that end the tuple (`in`).
  absl::StatusOr<ExprPtr> ParseTuple(bool simplified, bool with_condexpr, EndTokens extra_end,
                                     bool explicit_parentheses);
  // One or more `| name(args)` applied to node (null for the filters of a block set).
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr node);

 private:
  // Records e's tree height and refuses trees taller than kMaxExprDepth.
  absl::StatusOr<ExprPtr> Sized(ExprPtr e) const;
  absl::StatusOr<ExprPtr> ParseCondExpr();
  absl::StatusOr<ExprPtr> ParseOr();
  absl::StatusOr<ExprPtr> ParseAnd();
  absl::StatusOr<ExprPtr> ParseNot();
  absl::StatusOr<ExprPtr> ParseCompare();
  absl::StatusOr<ExprPtr> ParseMath1();
  absl::StatusOr<ExprPtr> ParseConcat();
  absl::StatusOr<ExprPtr> ParseMath2();
  absl::StatusOr<ExprPtr> ParsePow();
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter);
  absl::StatusOr<ExprPtr> ParsePrimary();
  bool IsTupleEnd(EndTokens extra_end) const;
  absl::StatusOr<ExprPtr> ParseList();
  absl::StatusOr<ExprPtr> ParseDict();
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node);
  bool AtSliceEnd() const;
  absl::StatusOr<ExprPtr> ParseSubscribed();
  absl::Status ParseCallArgs(CallExprArgs* call);
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node);
};

}  // namespace dserve::engine::jinja
