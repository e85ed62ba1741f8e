// `dserve bench --step-costs`: what one decode step costs, split the way speculative decoding
// changes it — the main forward with 1..K+1 tokens per sequence (its LM head apart), and the
// MTP module's forward (its head apart) — at each batch size, medians of several runs; then the
// speedup that breakdown implies for DeepSeek-V3's proportions at a given acceptance rate.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "cli/flags.h"
#include "cli/model_session.h"

namespace dserve::cli {

std::vector<FlagSpec> StepCostFlags();
absl::Status RunStepCosts(const Flags& flags, ModelSession& session);

}  // namespace dserve::cli
