// What expert parallelism moves per token: each token goes once to every other rank holding
// one of its experts (dispatch: its hidden state in FP8 with a scale per 128 values, DeepSeek's
// wire format), and each such rank sends back one row, the sum of its experts' outputs for
// that token (combine: BF16). The arithmetic for routing that picks top_k of E experts
// uniformly, and the count on actual routing decisions (ep_volume_bench measures both at
// DeepSeek-V3's dimensions).
#pragma once

#include <cstdint>
#include <span>

namespace dserve::models {

struct EpVolume {
  double remote_ranks = 0;    // other ranks a token is sent to, on average
  double dispatch_bytes = 0;  // per token: remote_ranks * (hidden + 4 * hidden / 128)
  double combine_bytes = 0;   // per token: remote_ranks * 2 * hidden
};

// Uniform choice of top_k distinct experts of `experts` split evenly over `ep` ranks: another
// given rank holds none of a token's experts with probability C(E - E/ep, k) / C(E, k).
EpVolume UniformEpVolume(int64_t experts, int64_t top_k, int ep, int64_t hidden);

// Counted on routing decisions ids [tokens, top_k]; token t's home rank is t % ep (each rank
// dispatches its own tokens).
EpVolume CountedEpVolume(std::span<const int32_t> ids, int64_t top_k, int64_t experts, int ep,
                         int64_t hidden);

}  // namespace dserve::models
