// ParallelConfig: how one rank of a parallel model splits the network. Expert parallelism
// (ep_size ranks) gives each rank a contiguous slice of every MoE layer's routed experts;
// tensor parallelism (tp_size ranks) gives each its share of the attention heads, of the dense
// MLPs' and the shared experts' intermediate rows (and of every routed expert's without EP).
// All ranks hold the same tokens; EP exchanges routed tokens by all-to-all, TP sums partial
// outputs by all-reduce. ep_size and tp_size are each 1 or the group's size.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "models/config.h"
#include "parallel/communicator.h"

namespace dserve::models {

struct ParallelConfig {
  int ep_size = 1;
  int tp_size = 1;
  parallel::Communicator* comm = nullptr;  // the group (required when ep_size or tp_size > 1)

  int world() const { return comm ? comm->size() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
  bool parallel() const { return ep_size > 1 || tp_size > 1; }
  int ep_rank() const { return ep_size > 1 ? rank() : 0; }
  int tp_rank() const { return tp_size > 1 ? rank() : 0; }
  // This rank's share [first, first + count) of `total` (total divisible by `parts`).
  static int64_t First(int64_t total, int parts, int index) { return total / parts * index; }

  // The sizes divide what they split, and the group matches them; errors name the flag.
  absl::Status Validate(const ModelConfig& model) const;
  std::string Describe() const;  // "EP 4, TP 1, rank 2 of 4"
};

}  // namespace dserve::models
