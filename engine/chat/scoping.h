// jinja2's compile-time scoping (its idtracking): in each frame (the template, a for loop's
// body or else block, a set block, a generation block) a name whose first reference is an
// assignment, made unconditionally or on every branch of an if/elif/else, starts out undefined
// ("missing") rather than taking a render variable of the same name. Only frames nested inside
// it that read the name before the assignment can tell; this pass finds those names so that
// the interpreter can bind them as undefined when it enters the frame.
#pragma once

#include "engine/chat/ast.h"

namespace dserve::engine::jinja {

// Fills template->undefined_at_entry and every statement's undefined_at_entry lists.
void AnalyzeScopes(Template* tmpl);

}  // namespace dserve::engine::jinja
