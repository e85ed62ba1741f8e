#include "models/parallel_config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::models {

absl::Status ParallelConfig::Validate(const ModelConfig& m) const {
  if (ep_size < 1 || tp_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ep-size and --tp-size must be >= 1, got ", ep_size, " and ", tp_size));
  }
  if (!parallel()) {
    if (dp_attention) {
      return absl::InvalidArgumentError("--dp-attention needs --ep-size > 1");
    }
    return absl::OkStatus();
  }
  if (comm == nullptr) {
    return absl::InvalidArgumentError("a parallel model needs a communicator");
  }
  const int w = comm->size();
  if ((ep_size != 1 && ep_size != w) || (tp_size != 1 && tp_size != w)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ep-size (", ep_size, ") and --tp-size (", tp_size,
        ") must each be 1 or the number of ranks (", w, ")"));
  }
  if (dp_attention && (ep_size != w || tp_size != 1)) {
    return absl::InvalidArgumentError(
        "--dp-attention needs --ep-size equal to the number of ranks and --tp-size 1");
  }
  if (ep_size > 1 && (m.n_routed_experts == 0 || m.n_routed_experts % ep_size != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--ep-size ", ep_size, " must divide the ",
                                                   m.n_routed_experts, " routed experts"));
  }
  if (tp_size > 1) {
    auto divides = [&](int64_t n, const char* what) -> absl::Status {
      if (n % tp_size == 0) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("--tp-size ", tp_size, " must divide the ", n, " ", what));
    };
    DSERVE_RETURN_IF_ERROR(divides(m.num_attention_heads, "attention heads"));
    if (m.first_k_dense_replace > 0 || m.n_routed_experts == 0) {
      DSERVE_RETURN_IF_ERROR(divides(m.intermediate_size, "rows of the dense MLPs"));
    }
    if (m.n_routed_experts > 0) {
      DSERVE_RETURN_IF_ERROR(
          divides(m.moe_intermediate_size * std::max(1, m.n_shared_experts),
                  "rows of the shared experts"));
      if (ep_size == 1) {
        DSERVE_RETURN_IF_ERROR(divides(m.moe_intermediate_size, "rows of each routed expert"));
      }
    }
  }
  return absl::OkStatus();
}

std::string ParallelConfig::Describe() const {
  return absl::StrCat("EP ", ep_size, ", TP ", tp_size, dp_attention ? ", DP attention" : "",
                      ", rank ", rank(), " of ", world());
}

}  // namespace dserve::models
