// How template failures become absl::Status: Python's exceptions ("TypeError: ...") as
// InvalidArgument, constructs dserve does not implement as Unimplemented, each located once
// with the template line that raised it.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dserve::engine::jinja {

// This absl build has its own string_view type; Sv hands a std::string_view to absl's calls.
inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The exception a template raises in Python, e.g. PyError("TypeError", "unhashable type").
absl::Status PyError(std::string_view type, std::string_view message);
inline absl::Status TypeError(std::string_view message) { return PyError("TypeError", message); }
inline absl::Status ValueError(std::string_view message) { return PyError("ValueError", message); }

// A construct of Python or jinja2 that dserve does not implement, named in `what`.
absl::Status Unsupported(std::string_view what);

// raise_exception(message): the template's own message, unchanged and never located, so that
// front ends can show it to the user as the reason a request was refused.
absl::Status TemplateRaised(std::string_view message);

// Prefixes "chat template line N: " unless the status already names a line (or is raised).
absl::Status AtLine(absl::Status status, int line);

}  // namespace dserve::engine::jinja
