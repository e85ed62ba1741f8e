// The parsed form of a chat template: expression and statement nodes, each with the template
// line it came from. Built once by the parser, read-only while rendering (renders may run
// concurrently on one template).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat/value.h"

namespace dserve::engine::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kConst,     // value
  kName,      // name
  kList,      // children: items
  kTuple,     // children: items
  kDict,      // children: key0, value0, key1, value1, ...
  kGetAttr,   // children[0].name
  kGetItem,   // children[0][children[1]]
  kSlice,     // children: start, stop, step (each may be null); only inside kGetItem
  kCall,      // children[0](call)
  kFilter,    // children[0] | name(call); children[0] is null in {% set x | f %}
  kTest,      // children[0] is name(call)
  kUnary,     // name: "-" or "+"; children[0]
  kBinary,    // name: "+", "-", "*", "/", "//", "%", "**"; children[0], children[1]
  kConcat,    // children joined with ~
  kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ... (chained)
  kAnd,       // children[0] and children[1]
  kOr,        // children[0] or children[1]
  kNot,       // not children[0]
  kCondExpr,  // children: value, test, else value (may be null)
};

struct CallExprArgs {
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr star_args;    // *args
  ExprPtr star_kwargs;  // **kwargs
};

struct Expr {
  ExprKind kind = ExprKind::kConst;
  int line = 1;
  int depth = 1;  // of the tree below and including this node
  Value value;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::string> ops;  // kCompare: "==", "!=", "<", "<=", ">", ">=", "in", "notin"
  CallExprArgs call;
};

// What `for` and `set` assign to: a name, a tuple of names, or a namespace attribute.
struct AssignTarget {
  std::vector<std::string> names;
  bool is_tuple = false;
  std::string ns_attr;  // non-empty: names[0].ns_attr = ...
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }} or {% print expr %}
  kIf,        // branches, else_body
  kFor,       // target in expr [if loop_filter]: body, else_body
  kSet,       // target = expr
  kSetBlock,  // {% set target | expr %}body{% endset %}; expr is a filter chain or null
  kBreak,
  kContinue,
  kGeneration,  // Hugging Face's {% generation %}body{% endgeneration %}: renders body
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 1;
  std::string text;
  ExprPtr expr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  ExprPtr loop_filter;
  AssignTarget target;
  // Names that start undefined in the frame this statement opens (a for loop's body, a set
  // block's or generation's body); for a for loop's else block, else_undefined_at_entry. See
  // scoping.h.
  std::vector<std::string> undefined_at_entry;
  std::vector<std::string> else_undefined_at_entry;
};

struct Template {
  Body body;
  // Names that start undefined in the top-level frame, hiding render variables of that name.
  std::vector<std::string> undefined_at_entry;
};

}  // namespace dserve::engine::jinja
