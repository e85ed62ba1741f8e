// What expert parallelism moves per token. The target wire format (DeepSeek's, DeepEP's): each
// token goes once to every other rank holding one of its experts (dispatch: its hidden state
// in FP8 with a scale per 128 values), and each such rank sends back one row, the sum of its
// experts' outputs for that token (combine: BF16). What ExpertParallelMoe moves today: one F32
// row and an int32 id per (token, expert) pair on another rank, one F32 row back. The
// arithmetic for routing that picks top_k of E experts uniformly, and the count on actual
// routing decisions (ep_volume_bench measures both at DeepSeek-V3's dimensions).
#pragma once

#include <cstdint>
#include <span>

namespace dserve::models {

struct EpVolume {
  double remote_ranks = 0;    // other ranks a token is sent to, on average
  double dispatch_bytes = 0;  // per token: remote_ranks * (hidden + 4 * hidden / 128)
  double combine_bytes = 0;   // per token: remote_ranks * 2 * hidden
  // Today's protocol: (token, expert) pairs on other ranks, and the bytes they move both ways
  // (remote_pairs * (4 * hidden + 4 + 4 * hidden)).
  double remote_pairs = 0;
  double pair_bytes = 0;
};

// Uniform choice of top_k distinct experts of `experts` split evenly over `ep` ranks: another
// given rank holds none of a token's experts with probability C(E - E/ep, k) / C(E, k), and
// each expert is remote with probability (ep - 1) / ep.
EpVolume UniformEpVolume(int64_t experts, int64_t top_k, int ep, int64_t hidden);

// Counted on routing decisions ids [tokens, top_k]; token t's home rank is t % ep (for
// exchangeable tokens the same as ExpertParallelMoe's contiguous shares).
EpVolume CountedEpVolume(std::span<const int32_t> ids, int64_t top_k, int64_t experts, int ep,
                         int64_t hidden);

}  // namespace dserve::models
