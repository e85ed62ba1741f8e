// Programmer-invariant checks (abort with a message) and absl::Status plumbing macros.
// Bad input never reaches DSERVE_CHECK: it is reported as an absl::Status instead.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dserve::internal {

// Collects a streamed message and aborts when destroyed: DSERVE_CHECK(x) << "why";
class CheckFailure {
 public:
  CheckFailure(const char* cond, const char* file, int line) {
    stream_ << file << ":" << line << ": check failed: " << cond << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::fprintf(stderr, "%s\n", stream_.str().c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets the macro be used as an expression statement that swallows the stream when cond holds.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace dserve::internal

#define DSERVE_CHECK(cond)                   \
  (cond) ? (void)0                           \
         : ::dserve::internal::Voidify() &   \
               ::dserve::internal::CheckFailure(#cond, __FILE__, __LINE__).stream()

#define DSERVE_CONCAT_INNER(a, b) a##b
#define DSERVE_CONCAT(a, b) DSERVE_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define DSERVE_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status dserve_status_ = (expr);          \
    if (!dserve_status_.ok()) return dserve_status_; \
  } while (0)

// `lhs = value of expr` for an absl::StatusOr expression, or returns its error.
#define DSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  DSERVE_ASSIGN_OR_RETURN_IMPL(DSERVE_CONCAT(dserve_statusor_, __LINE__), lhs, expr)
#define DSERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()
