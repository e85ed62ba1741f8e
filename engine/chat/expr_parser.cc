#include "engine/chat/expr_parser.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::engine::jinja {
namespace {

ExprPtr MakeExpr(ExprKind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

ExprPtr Binary(ExprKind kind, std::string op, ExprPtr left, ExprPtr right, int line) {
  auto e = MakeExpr(kind, line);
  e->name = std::move(op);
  e->children.push_back(std::move(left));
  e->children.push_back(std::move(right));
  return e;
}

}  // namespace

absl::StatusOr<ExprPtr> ExprParser::Sized(ExprPtr e) const {
  int below = 0;
  auto see = [&below](const ExprPtr& c) {
    if (c) below = std::max(below, c->depth);
  };
  for (const ExprPtr& c : e->children) see(c);
  for (const ExprPtr& c : e->call.args) see(c);
  for (const auto& [k, c] : e->call.kwargs) see(c);
  see(e->call.star_args);
  see(e->call.star_kwargs);
  e->depth = below + 1;
  if (e->depth > kMaxExprDepth) {
    return Fail(absl::StrCat("expression nested more than ", kMaxExprDepth, " levels deep"),
                e->line);
  }
  return e;
}

absl::StatusOr<ExprPtr> ExprParser::ParseExpression(bool with_condexpr) {
  return with_condexpr ? ParseCondExpr() : ParseOr();
}

absl::StatusOr<ExprPtr> ExprParser::ParseCondExpr() {
  const NestingGuard guard(this);
  DSERVE_RETURN_IF_ERROR(guard.Check());
  const int line = Cur().line;
  DSERVE_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
  while (SkipName("if")) {
    auto cond = MakeExpr(ExprKind::kCondExpr, line);
    DSERVE_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
    ExprPtr otherwise;
    if (SkipName("else")) {
      DSERVE_ASSIGN_OR_RETURN(otherwise, ParseCondExpr());
    }
    cond->children.push_back(std::move(expr));
    cond->children.push_back(std::move(test));
    cond->children.push_back(std::move(otherwise));
    DSERVE_ASSIGN_OR_RETURN(expr, Sized(std::move(cond)));
  }
  return expr;
}

absl::StatusOr<ExprPtr> ExprParser::ParseOr() {
  DSERVE_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
  while (IsName("or")) {
    const int line = Cur().line;
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
    DSERVE_ASSIGN_OR_RETURN(
        left, Sized(Binary(ExprKind::kOr, "", std::move(left), std::move(right), line)));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExprParser::ParseAnd() {
  DSERVE_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
  while (IsName("and")) {
    const int line = Cur().line;
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
    DSERVE_ASSIGN_OR_RETURN(
        left, Sized(Binary(ExprKind::kAnd, "", std::move(left), std::move(right), line)));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExprParser::ParseNot() {
  if (IsName("not")) {
    const NestingGuard guard(this);
    DSERVE_RETURN_IF_ERROR(guard.Check());
    auto e = MakeExpr(ExprKind::kNot, Cur().line);
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
    e->children.push_back(std::move(operand));
    return Sized(std::move(e));
  }
  return ParseCompare();
}

absl::StatusOr<ExprPtr> ExprParser::ParseCompare() {
  const int line = Cur().line;
  DSERVE_ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
  ExprPtr cmp;
  while (true) {
    std::string op;
    if (Cur().type == TokenType::kOperator &&
        (Cur().value == "==" || Cur().value == "!=" || Cur().value == "<" || Cur().value == "<=" ||
         Cur().value == ">" || Cur().value == ">=")) {
      op = Cur().value;
      Next();
    } else if (IsName("in")) {
      op = "in";
      Next();
    } else if (IsName("not") && Look().type == TokenType::kName && Look().value == "in") {
      op = "notin";
      Next();
      Next();
    } else {
      break;
    }
    if (!cmp) {
      cmp = MakeExpr(ExprKind::kCompare, line);
      cmp->children.push_back(std::move(first));
    }
    DSERVE_ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
    cmp->ops.push_back(op);
    cmp->children.push_back(std::move(operand));
  }
  if (!cmp) return first;
  return Sized(std::move(cmp));
}

absl::StatusOr<ExprPtr> ExprParser::ParseMath1() {
  DSERVE_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
  while (IsOp("+") || IsOp("-")) {
    const std::string op = Cur().value;
    const int line = Cur().line;
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
    DSERVE_ASSIGN_OR_RETURN(
        left, Sized(Binary(ExprKind::kBinary, op, std::move(left), std::move(right), line)));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExprParser::ParseConcat() {
  const int line = Cur().line;
  DSERVE_ASSIGN_OR_RETURN(ExprPtr first, ParseMath2());
  if (!IsOp("~")) return first;
  auto concat = MakeExpr(ExprKind::kConcat, line);
  concat->children.push_back(std::move(first));
  while (SkipOp("~")) {
    DSERVE_ASSIGN_OR_RETURN(ExprPtr next, ParseMath2());
    concat->children.push_back(std::move(next));
  }
  return Sized(std::move(concat));
}

absl::StatusOr<ExprPtr> ExprParser::ParseMath2() {
  DSERVE_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
  while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
    const std::string op = Cur().value;
    const int line = Cur().line;
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
    DSERVE_ASSIGN_OR_RETURN(
        left, Sized(Binary(ExprKind::kBinary, op, std::move(left), std::move(right), line)));
  }
  return left;
}

// jinja2's ** is left-associative and binds looser than unary minus: -2**2 == 4.
absl::StatusOr<ExprPtr> ExprParser::ParsePow() {
  DSERVE_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
  while (IsOp("**")) {
    const int line = Cur().line;
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
    DSERVE_ASSIGN_OR_RETURN(
        left, Sized(Binary(ExprKind::kBinary, "**", std::move(left), std::move(right), line)));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExprParser::ParseUnary(bool with_filter) {
  const NestingGuard guard(this);
  DSERVE_RETURN_IF_ERROR(guard.Check());
  ExprPtr node;
  if (IsOp("-") || IsOp("+")) {
    node = MakeExpr(ExprKind::kUnary, Cur().line);
    node->name = Cur().value;
    Next();
    DSERVE_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
    node->children.push_back(std::move(operand));
    DSERVE_ASSIGN_OR_RETURN(node, Sized(std::move(node)));
  } else {
    DSERVE_ASSIGN_OR_RETURN(node, ParsePrimary());
  }
  DSERVE_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
  if (with_filter) {
    DSERVE_ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
  }
  return node;
}

absl::StatusOr<ExprPtr> ExprParser::ParsePrimary() {
  const Token& t = Cur();
  switch (t.type) {
    case TokenType::kName: {
      auto e = MakeExpr(ExprKind::kConst, t.line);
      if (t.value == "true" || t.value == "True") {
        e->value = Value::Bool(true);
      } else if (t.value == "false" || t.value == "False") {
        e->value = Value::Bool(false);
      } else if (t.value == "none" || t.value == "None") {
        e->value = Value::None();
      } else {
        e->kind = ExprKind::kName;
        e->name = t.value;
      }
      Next();
      return e;
    }
    case TokenType::kString: {
      auto e = MakeExpr(ExprKind::kConst, t.line);
      std::string text;
      while (Cur().type == TokenType::kString) {
        text += Cur().value;
        Next();
      }
      e->value = Value::String(std::move(text));
      return e;
    }
    case TokenType::kInteger:
    case TokenType::kFloat: {
      auto e = MakeExpr(ExprKind::kConst, t.line);
      e->value =
          t.type == TokenType::kInteger ? Value::Int(t.int_value) : Value::Float(t.float_value);
      Next();
      return e;
    }
    case TokenType::kOperator:
      if (t.value == "(") {
        Next();
        DSERVE_ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(false, true, {}, true));
        DSERVE_RETURN_IF_ERROR(ExpectOp(")"));
        return e;
      }
      if (t.value == "[") return ParseList();
      if (t.value == "{") return ParseDict();
      break;
    default:
      break;
  }
  return Fail(absl::StrCat("unexpected ", DescribeToken(t)), t.line);
}

bool ExprParser::IsTupleEnd(EndTokens extra_end) const {
  if (Cur().type == TokenType::kVariableEnd || Cur().type == TokenType::kBlockEnd || IsOp(")")) {
    return true;
  }
  return IsAnyName(extra_end);
}

absl::StatusOr<ExprPtr> ExprParser::ParseTuple(bool simplified, bool with_condexpr,
                                               EndTokens extra_end, bool explicit_parentheses) {
  const int line = Cur().line;
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) DSERVE_RETURN_IF_ERROR(ExpectOp(","));
    if (IsTupleEnd(extra_end)) break;
    ExprPtr item;
    if (simplified) {
      DSERVE_ASSIGN_OR_RETURN(item, ParsePrimary());
    } else {
      DSERVE_ASSIGN_OR_RETURN(item, ParseExpression(with_condexpr));
    }
    items.push_back(std::move(item));
    if (!IsOp(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parentheses) {
      return Fail(absl::StrCat("Expected an expression, got ", DescribeToken(Cur())), Cur().line);
    }
  }
  auto tuple = MakeExpr(ExprKind::kTuple, line);
  tuple->children = std::move(items);
  return Sized(std::move(tuple));
}

absl::StatusOr<ExprPtr> ExprParser::ParseList() {
  auto list = MakeExpr(ExprKind::kList, Cur().line);
  Next();
  while (!IsOp("]")) {
    if (!list->children.empty()) DSERVE_RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp("]")) break;
    DSERVE_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
    list->children.push_back(std::move(item));
  }
  DSERVE_RETURN_IF_ERROR(ExpectOp("]"));
  return Sized(std::move(list));
}

absl::StatusOr<ExprPtr> ExprParser::ParseDict() {
  auto dict = MakeExpr(ExprKind::kDict, Cur().line);
  Next();
  while (!IsOp("}")) {
    if (!dict->children.empty()) DSERVE_RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp("}")) break;
    DSERVE_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
    DSERVE_RETURN_IF_ERROR(ExpectOp(":"));
    DSERVE_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
    dict->children.push_back(std::move(key));
    dict->children.push_back(std::move(value));
  }
  DSERVE_RETURN_IF_ERROR(ExpectOp("}"));
  return Sized(std::move(dict));
}

absl::StatusOr<ExprPtr> ExprParser::ParsePostfix(ExprPtr node) {
  while (true) {
    if (IsOp(".") || IsOp("[")) {
      DSERVE_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
    } else if (IsOp("(")) {
      DSERVE_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
    } else {
      return node;
    }
  }
}

absl::StatusOr<ExprPtr> ExprParser::ParseFilterExpr(ExprPtr node) {
  while (true) {
    if (IsOp("|")) {
      DSERVE_ASSIGN_OR_RETURN(node, ParseFilter(std::move(node)));
    } else if (IsName("is")) {
      DSERVE_ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
    } else if (IsOp("(")) {
      DSERVE_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
    } else {
      return node;
    }
  }
}

absl::StatusOr<ExprPtr> ExprParser::ParseSubscript(ExprPtr node) {
  const Token t = Cur();
  Next();
  if (t.value == ".") {
    const Token attr = Cur();
    Next();
    if (attr.type == TokenType::kName) {
      auto e = MakeExpr(ExprKind::kGetAttr, t.line);
      e->name = attr.value;
      e->children.push_back(std::move(node));
      return Sized(std::move(e));
    }
    if (attr.type != TokenType::kInteger) return Fail("expected name or number", attr.line);
    auto key = MakeExpr(ExprKind::kConst, attr.line);
    key->value = Value::Int(attr.int_value);
    auto e = MakeExpr(ExprKind::kGetItem, t.line);
    e->children.push_back(std::move(node));
    e->children.push_back(std::move(key));
    return Sized(std::move(e));
  }
  std::vector<ExprPtr> args;
  while (!IsOp("]")) {
    if (!args.empty()) DSERVE_RETURN_IF_ERROR(ExpectOp(","));
    DSERVE_ASSIGN_OR_RETURN(ExprPtr arg, ParseSubscribed());
    args.push_back(std::move(arg));
  }
  DSERVE_RETURN_IF_ERROR(ExpectOp("]"));
  auto e = MakeExpr(ExprKind::kGetItem, t.line);
  e->children.push_back(std::move(node));
  if (args.size() == 1) {
    e->children.push_back(std::move(args[0]));
  } else {
    auto tuple = MakeExpr(ExprKind::kTuple, t.line);
    tuple->children = std::move(args);
    DSERVE_ASSIGN_OR_RETURN(tuple, Sized(std::move(tuple)));
    e->children.push_back(std::move(tuple));
  }
  return Sized(std::move(e));
}

bool ExprParser::AtSliceEnd() const { return IsOp("]") || IsOp(","); }

absl::StatusOr<ExprPtr> ExprParser::ParseSubscribed() {
  const int line = Cur().line;
  ExprPtr start;
  if (!IsOp(":")) {
    DSERVE_ASSIGN_OR_RETURN(start, ParseExpression(true));
    if (!IsOp(":")) return start;
  }
  Next();  // the first ':'
  auto slice = MakeExpr(ExprKind::kSlice, line);
  slice->children.push_back(std::move(start));
  ExprPtr stop;
  if (!IsOp(":") && !AtSliceEnd()) {
    DSERVE_ASSIGN_OR_RETURN(stop, ParseExpression(true));
  }
  slice->children.push_back(std::move(stop));
  ExprPtr step;
  if (SkipOp(":") && !AtSliceEnd()) {
    DSERVE_ASSIGN_OR_RETURN(step, ParseExpression(true));
  }
  slice->children.push_back(std::move(step));
  return Sized(std::move(slice));
}

absl::Status ExprParser::ParseCallArgs(CallExprArgs* call) {
  const int line = Cur().line;
  DSERVE_RETURN_IF_ERROR(ExpectOp("("));
  bool require_comma = false;
  auto invalid = [&] { return Fail("invalid syntax for function call expression", line); };
  while (!IsOp(")")) {
    if (require_comma) {
      DSERVE_RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
    }
    if (IsOp("*")) {
      if (call->star_args || call->star_kwargs) return invalid();
      Next();
      DSERVE_ASSIGN_OR_RETURN(call->star_args, ParseExpression(true));
    } else if (IsOp("**")) {
      if (call->star_kwargs) return invalid();
      Next();
      DSERVE_ASSIGN_OR_RETURN(call->star_kwargs, ParseExpression(true));
    } else if (Cur().type == TokenType::kName && Look().type == TokenType::kOperator &&
               Look().value == "=") {
      if (call->star_kwargs) return invalid();
      std::string key = Cur().value;
      Next();
      Next();
      DSERVE_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      call->kwargs.emplace_back(std::move(key), std::move(value));
    } else {
      if (call->star_args || call->star_kwargs || !call->kwargs.empty()) return invalid();
      DSERVE_ASSIGN_OR_RETURN(ExprPtr arg, ParseExpression(true));
      call->args.push_back(std::move(arg));
    }
    require_comma = true;
  }
  return ExpectOp(")");
}

absl::StatusOr<ExprPtr> ExprParser::ParseCall(ExprPtr node) {
  auto e = MakeExpr(ExprKind::kCall, Cur().line);
  DSERVE_RETURN_IF_ERROR(ParseCallArgs(&e->call));
  e->children.push_back(std::move(node));
  return Sized(std::move(e));
}

// One or more `| name(args)`; node is null for the filters of a block set.
absl::StatusOr<ExprPtr> ExprParser::ParseFilter(ExprPtr node) {
  while (SkipOp("|")) {
    const int line = Cur().line;
    DSERVE_ASSIGN_OR_RETURN(std::string name, ExpectName());
    while (SkipOp(".")) {
      DSERVE_ASSIGN_OR_RETURN(std::string part, ExpectName());
      absl::StrAppend(&name, ".", part);
    }
    auto e = MakeExpr(ExprKind::kFilter, line);
    e->name = name;
    if (IsOp("(")) DSERVE_RETURN_IF_ERROR(ParseCallArgs(&e->call));
    e->children.push_back(std::move(node));
    DSERVE_ASSIGN_OR_RETURN(node, Sized(std::move(e)));
  }
  return node;
}

absl::StatusOr<ExprPtr> ExprParser::ParseTest(ExprPtr node) {
  const int line = Cur().line;
  Next();  // 'is'
  const bool negated = SkipName("not");
  DSERVE_ASSIGN_OR_RETURN(std::string name, ExpectName());
  while (SkipOp(".")) {
    DSERVE_ASSIGN_OR_RETURN(std::string part, ExpectName());
    absl::StrAppend(&name, ".", part);
  }
  auto e = MakeExpr(ExprKind::kTest, line);
  e->name = name;
  const Token& t = Cur();
  const bool arg_start =
      t.type == TokenType::kName || t.type == TokenType::kString || t.type == TokenType::kInteger ||
      t.type == TokenType::kFloat ||
      (t.type == TokenType::kOperator && (t.value == "(" || t.value == "[" || t.value == "{"));
  if (IsOp("(")) {
    DSERVE_RETURN_IF_ERROR(ParseCallArgs(&e->call));
  } else if (arg_start && !IsName("else") && !IsName("or") && !IsName("and")) {
    if (IsName("is")) return Fail("You cannot chain multiple tests with is", Cur().line);
    DSERVE_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
    DSERVE_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
    e->call.args.push_back(std::move(arg));
  }
  e->children.push_back(std::move(node));
  DSERVE_ASSIGN_OR_RETURN(e, Sized(std::move(e)));
  if (!negated) return e;
  auto n = MakeExpr(ExprKind::kNot, line);
  n->children.push_back(std::move(e));
  return Sized(std::move(n));
}

}  // namespace dserve::engine::jinja
