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
#include "kernels/latent_cache.h"
#include "models/config.h"
#include "parallel/communicator.h"

namespace dserve::models {

struct ParallelConfig {
  int ep_size = 1;
  int tp_size = 1;
  // Attention (and the dense layers) data-parallel: every rank runs them only for the
  // sequences it owns (SliceOwner), whose latents only its cache holds; MoE layers exchange
  // the tokens by EP's all-to-all. Needs EP over every rank and no TP.
  bool dp_attention = false;
  parallel::Communicator* comm = nullptr;  // the group (required when ep_size or tp_size > 1)

  int world() const { return comm ? comm->size() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
  bool parallel() const { return ep_size > 1 || tp_size > 1; }
  int ep_rank() const { return ep_size > 1 ? rank() : 0; }
  int tp_rank() const { return tp_size > 1 ? rank() : 0; }

  // DP attention: the rank owning a sequence, by its first cache page (stable for its life,
  // and shared by the sequences that share its prefix pages or fork from it).
  int SliceOwner(const kernels::SequenceSlice& s) const {
    return s.block_table.empty() ? 0 : s.block_table[0] % world();
  }

  // The sizes divide what they split, and the group matches them; errors name the flag.
  absl::Status Validate(const ModelConfig& model) const;
  std::string Describe() const;  // "EP 4, TP 1, DP attention, rank 2 of 4"
};

}  // namespace dserve::models
