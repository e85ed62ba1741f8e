// Renders a parsed template: statements with jinja2's scoping (each for-loop iteration and each
// set block gets its own scope, an if does not; namespace() objects are the way out of a loop),
// expressions with Python's semantics, and errors located at the template line that raised them.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/chat/ast.h"
#include "engine/chat/globals.h"
#include "engine/chat/value.h"

namespace dserve::engine::jinja {

// variables: the template's top-level names (they shadow the globals).
absl::StatusOr<std::string> RenderTemplate(const Template& tmpl, const Dict& variables,
                                           const Clock& clock);

}  // namespace dserve::engine::jinja
