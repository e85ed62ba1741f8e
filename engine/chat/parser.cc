#include "engine/chat/parser.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "engine/chat/errors.h"
#include "engine/chat/expr_parser.h"
#include "engine/chat/filters.h"
#include "engine/chat/jinja_tests.h"
#include "engine/chat/lexer.h"
#include "engine/chat/scoping.h"

namespace dserve::engine::jinja {
namespace {

// Tags of jinja2 that dserve refuses to parse (no published chat template we serve needs them).
constexpr std::string_view kUnsupportedTags[] = {"macro",   "call",      "filter", "block",
                                                 "extends", "include",   "import", "from",
                                                 "with",    "autoescape"};

class Parser : public ExprParser {
 public:
  explicit Parser(std::vector<Token> tokens) : ExprParser(std::move(tokens)) {}

  absl::StatusOr<Body> Run() { return Subparse({}); }

 private:
  absl::StatusOr<Body> Subparse(EndTokens end_tokens) {
    Body body;
    while (Cur().type != TokenType::kEof) {
      const Token& t = Cur();
      if (t.type == TokenType::kData) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->line = t.line;
        s->text = t.value;
        body.push_back(std::move(s));
        Next();
      } else if (t.type == TokenType::kVariableBegin) {
        Next();
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->line = t.line;
        DSERVE_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, true, {}, false));
        DSERVE_RETURN_IF_ERROR(ExpectType(TokenType::kVariableEnd));
        body.push_back(std::move(s));
      } else if (t.type == TokenType::kBlockBegin) {
        Next();
        if (end_tokens.size() > 0 && IsAnyName(end_tokens)) return body;
        DSERVE_ASSIGN_OR_RETURN(Body stmts, ParseStatement());
        for (auto& s : stmts) body.push_back(std::move(s));
        DSERVE_RETURN_IF_ERROR(ExpectType(TokenType::kBlockEnd));
      } else {
        return Unexpected("template data or a tag");
      }
    }
    return body;
  }

  absl::StatusOr<Body> ParseStatements(EndTokens end_tokens, bool drop_needle) {
    const NestingGuard guard(this);
    DSERVE_RETURN_IF_ERROR(guard.Check());
    SkipOp(":");
    DSERVE_RETURN_IF_ERROR(ExpectType(TokenType::kBlockEnd));
    DSERVE_ASSIGN_OR_RETURN(Body body, Subparse(end_tokens));
    if (Cur().type == TokenType::kEof) {
      std::vector<std::string> names;
      for (std::string_view n : end_tokens) names.push_back(absl::StrCat("'", Sv(n), "'"));
      return Fail(absl::StrCat("Unexpected end of template. Jinja was looking for the following "
                               "tags: ",
                               absl::StrJoin(names, " or "), "."),
                  Cur().line);
    }
    if (drop_needle) Next();
    return body;
  }

  absl::StatusOr<Body> ParseStatement() {
    const Token& t = Cur();
    if (t.type != TokenType::kName) return Fail("tag name expected", t.line);
    const std::string tag = t.value;
    const int line = t.line;
    for (std::string_view unsupported : kUnsupportedTags) {
      if (tag == unsupported) {
        return AtLine(Unsupported(absl::StrCat("the {% ", tag, " %} tag")), line);
      }
    }
    Body out;
    StmtPtr s = std::make_unique<Stmt>();
    s->line = line;
    if (tag == "if") {
      DSERVE_RETURN_IF_ERROR(ParseIf(s.get()));
    } else if (tag == "for") {
      DSERVE_RETURN_IF_ERROR(ParseFor(s.get()));
    } else if (tag == "set") {
      DSERVE_RETURN_IF_ERROR(ParseSet(s.get()));
    } else if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) {
        return Fail(absl::StrCat("'", tag, "' outside of a for loop"), line);
      }
      s->kind = tag == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      Next();
    } else if (tag == "generation") {
      Next();
      s->kind = StmtKind::kGeneration;
      DSERVE_ASSIGN_OR_RETURN(s->body, ParseStatements({"endgeneration"}, true));
    } else if (tag == "print") {
      // {% print a, b %} prints each expression in turn (not a tuple).
      Next();
      while (Cur().type != TokenType::kBlockEnd) {
        if (!out.empty()) DSERVE_RETURN_IF_ERROR(ExpectOp(","));
        auto p = std::make_unique<Stmt>();
        p->kind = StmtKind::kOutput;
        p->line = line;
        DSERVE_ASSIGN_OR_RETURN(p->expr, ParseExpression(true));
        out.push_back(std::move(p));
      }
      return out;
    } else {
      return Fail(absl::StrCat("Encountered unknown tag '", tag, "'."), line);
    }
    out.push_back(std::move(s));
    return out;
  }

  absl::Status ParseIf(Stmt* s) {
    s->kind = StmtKind::kIf;
    Next();
    while (true) {
      DSERVE_ASSIGN_OR_RETURN(ExprPtr test, ParseTuple(false, false, {}, false));
      DSERVE_ASSIGN_OR_RETURN(Body body, ParseStatements({"elif", "else", "endif"}, false));
      s->branches.emplace_back(std::move(test), std::move(body));
      const std::string which = Cur().value;
      Next();
      if (which == "elif") continue;
      if (which == "else") {
        DSERVE_ASSIGN_OR_RETURN(s->else_body, ParseStatements({"endif"}, true));
      }
      break;
    }
    return absl::OkStatus();
  }

  absl::Status ParseFor(Stmt* s) {
    s->kind = StmtKind::kFor;
    Next();
    DSERVE_ASSIGN_OR_RETURN(s->target, ParseAssignTarget(false, {"in"}));
    if (!SkipName("in")) return Unexpected("'in'");
    DSERVE_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, false, {"recursive"}, false));
    if (SkipName("if")) {
      DSERVE_ASSIGN_OR_RETURN(s->loop_filter, ParseExpression(true));
    }
    if (IsName("recursive")) {
      return AtLine(Unsupported("recursive for loops"), Cur().line);
    }
    ++loop_depth_;
    DSERVE_ASSIGN_OR_RETURN(s->body, ParseStatements({"endfor", "else"}, false));
    --loop_depth_;
    const bool has_else = IsName("else");
    Next();
    if (has_else) {
      DSERVE_ASSIGN_OR_RETURN(s->else_body, ParseStatements({"endfor"}, true));
    }
    return absl::OkStatus();
  }

  absl::Status ParseSet(Stmt* s) {
    Next();
    DSERVE_ASSIGN_OR_RETURN(s->target, ParseAssignTarget(true, {}));
    if (SkipOp("=")) {
      s->kind = StmtKind::kSet;
      DSERVE_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, true, {}, false));
      return absl::OkStatus();
    }
    s->kind = StmtKind::kSetBlock;
    if (IsOp("|")) {
      DSERVE_ASSIGN_OR_RETURN(s->expr, ParseFilter(nullptr));
    }
    DSERVE_ASSIGN_OR_RETURN(s->body, ParseStatements({"endset"}, true));
    return absl::OkStatus();
  }

  absl::StatusOr<AssignTarget> ParseAssignTarget(bool with_namespace, EndTokens extra_end) {
    AssignTarget target;
    const int line = Cur().line;
    if (with_namespace && Cur().type == TokenType::kName && Look().type == TokenType::kOperator &&
        Look().value == ".") {
      target.names.push_back(Cur().value);
      Next();
      Next();
      DSERVE_ASSIGN_OR_RETURN(target.ns_attr, ExpectName());
      return target;
    }
    DSERVE_ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(true, true, extra_end, false));
    if (e->kind == ExprKind::kName) {
      target.names.push_back(e->name);
      return target;
    }
    if (e->kind == ExprKind::kTuple) {
      target.is_tuple = true;
      for (const ExprPtr& item : e->children) {
        if (item->kind == ExprKind::kTuple) {
          return AtLine(Unsupported("nested tuple unpacking in an assignment"), line);
        }
        if (item->kind != ExprKind::kName) return Fail("can't assign to 'const'", line);
        target.names.push_back(item->name);
      }
      return target;
    }
    return Fail("can't assign to 'const'", line);
  }

  int loop_depth_ = 0;
};

// jinja2 refuses unknown filter and test names when compiling, except inside an if statement
// or a conditional expression (a "soft" frame), where they fail only if evaluated.
absl::Status CheckNames(const Expr* e, bool soft) {
  if (e == nullptr) return absl::OkStatus();
  if (e->kind == ExprKind::kCondExpr) soft = true;
  if (!soft && e->kind == ExprKind::kFilter && FilterNameStatus(e->name) == NameStatus::kUnknown) {
    return AtLine(
        PyError("TemplateAssertionError", absl::StrCat("No filter named '", e->name, "'.")),
        e->line);
  }
  if (!soft && e->kind == ExprKind::kTest && TestNameStatus(e->name) == NameStatus::kUnknown) {
    return AtLine(PyError("TemplateAssertionError", absl::StrCat("No test named '", e->name, "'.")),
                  e->line);
  }
  for (const ExprPtr& c : e->children) DSERVE_RETURN_IF_ERROR(CheckNames(c.get(), soft));
  for (const ExprPtr& c : e->call.args) DSERVE_RETURN_IF_ERROR(CheckNames(c.get(), soft));
  for (const auto& [k, c] : e->call.kwargs) DSERVE_RETURN_IF_ERROR(CheckNames(c.get(), soft));
  DSERVE_RETURN_IF_ERROR(CheckNames(e->call.star_args.get(), soft));
  return CheckNames(e->call.star_kwargs.get(), soft);
}

absl::Status CheckNames(const Body& body, bool soft) {
  for (const StmtPtr& s : body) {
    switch (s->kind) {
      case StmtKind::kIf:
        for (const auto& [test, branch] : s->branches) {
          DSERVE_RETURN_IF_ERROR(CheckNames(test.get(), true));
          DSERVE_RETURN_IF_ERROR(CheckNames(branch, true));
        }
        DSERVE_RETURN_IF_ERROR(CheckNames(s->else_body, true));
        break;
      case StmtKind::kFor:
        // The loop body, filter and else run in a new (not soft) frame.
        DSERVE_RETURN_IF_ERROR(CheckNames(s->expr.get(), soft));
        DSERVE_RETURN_IF_ERROR(CheckNames(s->loop_filter.get(), false));
        DSERVE_RETURN_IF_ERROR(CheckNames(s->body, false));
        DSERVE_RETURN_IF_ERROR(CheckNames(s->else_body, false));
        break;
      case StmtKind::kSetBlock:
        DSERVE_RETURN_IF_ERROR(CheckNames(s->expr.get(), soft));
        DSERVE_RETURN_IF_ERROR(CheckNames(s->body, false));
        break;
      case StmtKind::kGeneration:
        DSERVE_RETURN_IF_ERROR(CheckNames(s->body, soft));
        break;
      default:
        DSERVE_RETURN_IF_ERROR(CheckNames(s->expr.get(), soft));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Template> ParseTemplate(std::string_view source) {
  DSERVE_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source));
  Template tmpl;
  DSERVE_ASSIGN_OR_RETURN(tmpl.body, Parser(std::move(tokens)).Run());
  DSERVE_RETURN_IF_ERROR(CheckNames(tmpl.body, false));
  AnalyzeScopes(&tmpl);
  return tmpl;
}

}  // namespace dserve::engine::jinja
