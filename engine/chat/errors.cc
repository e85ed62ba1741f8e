#include "engine/chat/errors.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace dserve::engine::jinja {
namespace {

// Payload that marks a status as located (or deliberately unlocated).
constexpr char kLocatedPayload[] = "dserve.chat_template.located";

}  // namespace

absl::Status PyError(std::string_view type, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(Sv(type), ": ", Sv(message)));
}

absl::Status Unsupported(std::string_view what) {
  return absl::UnimplementedError(
      absl::StrCat(Sv(what), " is not supported by dserve's templates"));
}

absl::Status TemplateRaised(std::string_view message) {
  absl::Status status = absl::InvalidArgumentError(Sv(message));
  status.SetPayload(kLocatedPayload, absl::Cord("1"));
  return status;
}

absl::Status AtLine(absl::Status status, int line) {
  if (status.ok() || status.GetPayload(kLocatedPayload).has_value()) return status;
  absl::Status located(status.code(),
                       absl::StrCat("chat template line ", line, ": ", status.message()));
  located.SetPayload(kLocatedPayload, absl::Cord("1"));
  return located;
}

}  // namespace dserve::engine::jinja
