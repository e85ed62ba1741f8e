// RankCall: what the leader of a parallel model (rank 0, driven by the engine) tells the other
// ranks before each call they must all make — make a cache, run Forward or ForwardMtp on this
// batch — with the cache page copies (copy-on-write) queued since the last one, and the codec
// that carries it in one broadcast of int64 words.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/latent_cache.h"
#include "kernels/ops.h"
#include "parallel/communicator.h"

namespace dserve::models {

struct RankCall {
  enum Kind : int64_t { kStop = 0, kNewCache = 1, kForward = 2, kForwardMtp = 3 };
  Kind kind = kStop;
  kernels::LatentCacheShape shape;                   // kNewCache
  std::vector<std::pair<int32_t, int32_t>> copies;  // page copies (src, dst) to make first
  // kForward / kForwardMtp: the batch (slices' block tables are owned here).
  std::vector<int32_t> tokens, positions, logit_rows;
  struct Slice {
    int64_t row_begin = 0, num_tokens = 0, cached_tokens = 0;
    kernels::MlaMode mode = kernels::MlaMode::kAuto;
    std::vector<int32_t> block_table;
  };
  std::vector<Slice> slices;
  kernels::MlaMode mla_mode = kernels::MlaMode::kAuto;
  bool hidden_out = false;  // kForwardMtp: the leader wants the MTP block's output too

  // The batch as the model takes it (spans into this object).
  kernels::AttentionBatch Batch() const;
  void SetBatch(std::span<const int32_t> tokens, const kernels::AttentionBatch& batch,
                std::span<const int32_t> logit_rows, kernels::MlaMode mode);
};

std::vector<int64_t> EncodeRankCall(const RankCall& call);
absl::StatusOr<RankCall> DecodeRankCall(std::span<const int64_t> words);

// The leader broadcasts a call (its length, then its words) through the backend's memory;
// the others receive it. Collective over `comm`, rooted at rank 0.
absl::Status SendRankCall(kernels::Ops& ops, parallel::Communicator& comm, const RankCall& call);
absl::StatusOr<RankCall> ReceiveRankCall(kernels::Ops& ops, parallel::Communicator& comm);
// Every rank's `mine` (the same count on every rank), rank by rank, through the backend's
// memory as the communicator needs it.
absl::StatusOr<std::vector<int32_t>> AllGatherInts(kernels::Ops& ops,
                                                   parallel::Communicator& comm,
                                                   const std::vector<int32_t>& mine);
// Collective: OK on every rank when every rank's `mine` is OK; else this rank's own error, or
// (`code`) "rank R could not <what>" naming the first rank that failed.
absl::Status AgreeAllRanks(kernels::Ops& ops, parallel::Communicator& comm,
                           const absl::Status& mine, absl::StatusCode code, const char* what);
// A tensor's bytes from rank 0 to every rank (`t` allocated with the same shape everywhere).
absl::Status BroadcastTensor(kernels::Ops& ops, parallel::Communicator& comm, Tensor& t);

}  // namespace dserve::models
