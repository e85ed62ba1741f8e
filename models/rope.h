// RopeCache: DeepSeek's YaRN rotary embedding (or plain RoPE) as cos/sin tables, grown on
// demand to the longest position seen so far, never to max_position_embeddings up front.
#pragma once

#include <vector>

#include "kernels/ops.h"
#include "models/config.h"

namespace dserve::models {

class RopeCache {
 public:
  explicit RopeCache(const ModelConfig& config);

  // Makes positions [0, num_positions) available and returns the table.
  const kernels::RopeTable& Table(int64_t num_positions);
  // Per-frequency inverse wavelengths after YaRN's blend (exposed for tests).
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  double mscale() const { return mscale_; }

 private:
  std::vector<double> inv_freq_;  // [rope_dim / 2]
  double mscale_ = 1.0;           // folded into cos and sin
  std::vector<float> cos_, sin_;
  kernels::RopeTable table_;
};

}  // namespace dserve::models
