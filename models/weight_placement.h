// Moving a bound model's weights into its backend's memory, once, at load: every projection
// in its stored dtype (FP8 stays FP8, with its block scales) and every norm and bias.
#pragma once

#include "absl/status/status.h"
#include "kernels/ops.h"
#include "models/weights.h"

namespace dserve::models {

// A no-op on the CPU backend (it computes on the mapped checkpoint). Views of the same bytes
// (V3's MTP embedding and head, which the loader already shares with the main ones) get one
// device copy. Shows progress in bytes when show_progress.
absl::Status PlaceWeights(kernels::Ops& ops, ModelWeights& weights, bool show_progress);

}  // namespace dserve::models
