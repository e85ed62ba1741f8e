// Expert parallelism's MoE layer: each rank holds a contiguous slice of the routed experts and
// all ranks hold the same tokens. Rank r is home to the r-th share of the tokens: it sends each
// of its (token, choice) pairs to the rank owning the chosen expert (all-to-all), that rank runs
// the expert on the rows it received, the outputs come back (all-to-all), the home rank adds
// them in the order the single-rank MoE op adds (expert by expert, tokens ascending), and an
// all-gather gives every rank every token's sum. On the CPU the result is the single-rank
// op's, bit for bit.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "parallel/communicator.h"

namespace dserve::models {

struct ExpertParallelInput {
  const Tensor* x = nullptr;        // [T, hidden], the same on every rank
  const Tensor* ids = nullptr;      // [T, top_k] I32, router numbering
  const Tensor* weights = nullptr;  // [T, top_k] F32
  std::span<const kernels::MlpWeights> local_experts;  // this rank's slice, in order
  int64_t num_experts = 0;                             // all ranks' together
  // DP attention: x holds this rank's own tokens (any count, 0 too); out gets theirs and no
  // all-gather follows.
  bool local_tokens = false;
};

// Sum over each token's pairs of weight * expert(x) into out [T, hidden] (overwritten).
// Collective: every rank of `comm` calls it (with the same T unless local_tokens).
absl::Status ExpertParallelMoe(kernels::Ops& ops, parallel::Communicator& comm,
                               const ExpertParallelInput& in, Tensor& out);

}  // namespace dserve::models
