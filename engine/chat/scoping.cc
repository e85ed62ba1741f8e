#include "engine/chat/scoping.h"

#include <map>
#include <set>
#include <string>
#include <vector>

namespace dserve::engine::jinja {
namespace {

// How jinja2 initialises a frame's local for a name when the frame is entered.
enum class Init { kParameter, kResolve, kAlias, kUndefined };

// One frame's symbol table, as jinja2's idtracking.Symbols keeps it.
class Symbols {
 public:
  explicit Symbols(const Symbols* parent) : parent_(parent) {}

  bool FindRef(const std::string& name) const {
    return refs_.contains(name) || (parent_ != nullptr && parent_->FindRef(name));
  }
  void Load(const std::string& name) {
    if (!FindRef(name)) refs_[name] = Init::kResolve;
  }
  void Store(const std::string& name) {
    stores_.insert(name);
    if (refs_.contains(name)) return;
    refs_[name] = parent_ != nullptr && parent_->FindRef(name) ? Init::kAlias : Init::kUndefined;
  }
  void Parameter(const std::string& name) {
    stores_.insert(name);
    refs_[name] = Init::kParameter;
  }

  // After an if statement: names assigned on only some of its branches are looked up at frame
  // entry (from an enclosing frame, or the render variables) instead of starting undefined.
  void BranchUpdate(const std::vector<Symbols>& branches) {
    std::map<std::string, size_t> counts;
    for (const Symbols& b : branches) {
      for (const std::string& name : b.stores_) {
        if (!stores_.contains(name)) ++counts[name];
      }
    }
    for (const Symbols& b : branches) {
      for (const auto& [name, init] : b.refs_) refs_[name] = init;
      stores_.insert(b.stores_.begin(), b.stores_.end());
    }
    for (const auto& [name, count] : counts) {
      if (count == branches.size()) continue;
      refs_[name] = parent_ != nullptr && parent_->FindRef(name) ? Init::kAlias : Init::kResolve;
    }
  }

  std::vector<std::string> UndefinedNames() const {
    std::vector<std::string> names;
    for (const auto& [name, init] : refs_) {
      if (init == Init::kUndefined) names.push_back(name);
    }
    return names;
  }

 private:
  const Symbols* parent_;
  std::map<std::string, Init> refs_;
  std::set<std::string> stores_;
};

// A frame nested in the one being analysed, analysed once its parent is complete.
struct ChildFrame {
  Stmt* stmt;
  bool else_block;
};

// Whether an expression reads `name` (for the implicit `loop` parameter).
bool Reads(const Expr* e, const std::string& name) {
  if (e == nullptr) return false;
  if (e->kind == ExprKind::kName && e->name == name) return true;
  for (const ExprPtr& c : e->children) {
    if (Reads(c.get(), name)) return true;
  }
  for (const ExprPtr& c : e->call.args) {
    if (Reads(c.get(), name)) return true;
  }
  for (const auto& [k, c] : e->call.kwargs) {
    if (Reads(c.get(), name)) return true;
  }
  return Reads(e->call.star_args.get(), name) || Reads(e->call.star_kwargs.get(), name);
}

bool BodyReads(const Body& body, const std::string& name) {
  for (const StmtPtr& s : body) {
    if (Reads(s->expr.get(), name) || Reads(s->loop_filter.get(), name) ||
        BodyReads(s->body, name) || BodyReads(s->else_body, name)) {
      return true;
    }
    for (const auto& [test, branch] : s->branches) {
      if (Reads(test.get(), name) || BodyReads(branch, name)) return true;
    }
  }
  return false;
}

class FrameVisitor {
 public:
  FrameVisitor(Symbols* symbols, std::vector<ChildFrame>* children)
      : symbols_(symbols), children_(children) {}

  void VisitBody(Body& body) {
    for (StmtPtr& s : body) VisitStmt(*s);
  }

 private:
  void VisitExpr(const Expr* e) {
    if (e == nullptr) return;
    if (e->kind == ExprKind::kName) {
      symbols_->Load(e->name);
      return;
    }
    for (const ExprPtr& c : e->children) VisitExpr(c.get());
    for (const ExprPtr& c : e->call.args) VisitExpr(c.get());
    for (const auto& [k, c] : e->call.kwargs) VisitExpr(c.get());
    VisitExpr(e->call.star_args.get());
    VisitExpr(e->call.star_kwargs.get());
  }

  void VisitTarget(const AssignTarget& target) {
    if (!target.ns_attr.empty()) {
      symbols_->Load(target.names[0]);
      return;
    }
    for (const std::string& name : target.names) symbols_->Store(name);
  }

  // Visits body into a copy of the current symbols.
  Symbols Branch(Body& body, const Symbols& from) {
    Symbols copy = from;
    FrameVisitor v(&copy, children_);
    v.VisitBody(body);
    return copy;
  }

  // jinja2 nests each elif as an if of its own inside the "elif" branch.
  void VisitIf(Stmt& s) {
    VisitExpr(s.branches[0].first.get());
    Symbols body = Branch(s.branches[0].second, *symbols_);
    Symbols elifs = *symbols_;
    for (size_t i = 1; i < s.branches.size(); ++i) {
      FrameVisitor v(&elifs, children_);
      v.VisitExpr(s.branches[i].first.get());
      Symbols elif_body = Branch(s.branches[i].second, elifs);
      elifs.BranchUpdate({elif_body, elifs, elifs});
    }
    Symbols otherwise = Branch(s.else_body, *symbols_);
    symbols_->BranchUpdate({body, elifs, otherwise});
  }

  void VisitStmt(Stmt& s) {
    switch (s.kind) {
      case StmtKind::kText:
      case StmtKind::kBreak:
      case StmtKind::kContinue:
        return;
      case StmtKind::kOutput:
        VisitExpr(s.expr.get());
        return;
      case StmtKind::kIf:
        VisitIf(s);
        return;
      case StmtKind::kFor:
        // Only the iterable belongs to this frame.
        VisitExpr(s.expr.get());
        children_->push_back({&s, false});
        if (!s.else_body.empty()) children_->push_back({&s, true});
        return;
      case StmtKind::kSet:
        VisitExpr(s.expr.get());
        VisitTarget(s.target);
        return;
      case StmtKind::kSetBlock:
        VisitTarget(s.target);
        children_->push_back({&s, false});
        return;
      case StmtKind::kGeneration:
        children_->push_back({&s, false});
        return;
    }
  }

  Symbols* symbols_;
  std::vector<ChildFrame>* children_;
};

void AnalyzeChildren(const Symbols& parent, std::vector<ChildFrame>& children);

// Analyses one frame whose symbols start as `symbols`, then the frames nested in it.
std::vector<std::string> AnalyzeFrame(Symbols symbols, Body& body) {
  std::vector<ChildFrame> children;
  FrameVisitor(&symbols, &children).VisitBody(body);
  AnalyzeChildren(symbols, children);
  return symbols.UndefinedNames();
}

void AnalyzeChildren(const Symbols& parent, std::vector<ChildFrame>& children) {
  for (const ChildFrame& child : children) {
    Stmt& s = *child.stmt;
    Symbols symbols(&parent);
    if (child.else_block) {
      s.else_undefined_at_entry = AnalyzeFrame(symbols, s.else_body);
      continue;
    }
    if (s.kind == StmtKind::kFor) {
      for (const std::string& name : s.target.names) symbols.Parameter(name);
      std::vector<ChildFrame> grandchildren;
      FrameVisitor(&symbols, &grandchildren).VisitBody(s.body);
      if (BodyReads(s.body, "loop")) symbols.Parameter("loop");
      AnalyzeChildren(symbols, grandchildren);
      s.undefined_at_entry = symbols.UndefinedNames();
    } else {
      s.undefined_at_entry = AnalyzeFrame(symbols, s.body);
    }
  }
}

}  // namespace

void AnalyzeScopes(Template* tmpl) {
  tmpl->undefined_at_entry = AnalyzeFrame(Symbols(nullptr), tmpl->body);
}

}  // namespace dserve::engine::jinja
