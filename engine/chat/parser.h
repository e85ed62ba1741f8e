// The template parser: jinja2's grammar (operator precedence, filters and tests binding tighter
// than arithmetic, `if`/`for`/`set` statements) over the lexer's tokens. Tags dserve does not
// implement (macro, call, include, ...) are refused here, naming the tag and its line.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/ast.h"

namespace dserve::engine::jinja {

// Parses, checks filter and test names as jinja2's compiler does, and analyses scopes.
absl::StatusOr<Template> ParseTemplate(std::string_view source);

}  // namespace dserve::engine::jinja
