#include "models/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace dserve::models {
namespace {

// Dimension index at which a frequency completes `rotations` turns over the original context.
double CorrectionDim(double rotations, double dim, double base, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
}

}  // namespace

RopeCache::RopeCache(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim;
  const int64_t half = dim / 2;
  inv_freq_.resize(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq_[i] = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / dim);
  }
  const RopeScaling& y = c.rope_scaling;
  if (y.yarn) {
    // YaRN: high frequencies keep their original value ("extrapolation"), low ones are
    // divided by the factor ("interpolation"), with a linear ramp between the two.
    double low = std::floor(CorrectionDim(y.beta_fast, dim, c.rope_theta,
                                          y.original_max_position_embeddings));
    double high = std::ceil(CorrectionDim(y.beta_slow, dim, c.rope_theta,
                                          y.original_max_position_embeddings));
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      const double extrapolate = 1.0 - ramp;
      inv_freq_[i] = inv_freq_[i] / y.factor * (1.0 - extrapolate) + inv_freq_[i] * extrapolate;
    }
    mscale_ = YarnMscale(y.factor, y.mscale) / YarnMscale(y.factor, y.mscale_all_dim);
  }
  table_.rope_dim = dim;
}

const kernels::RopeTable& RopeCache::Table(int64_t num_positions) {
  const int64_t half = static_cast<int64_t>(inv_freq_.size());
  const int64_t have = table_.num_positions;
  if (num_positions > have) {
    // Grow geometrically so a long generation recomputes the table O(log n) times.
    const int64_t target = std::max<int64_t>(num_positions, std::max<int64_t>(2 * have, 256));
    cos_.resize(target * half);
    sin_.resize(target * half);
    for (int64_t p = have; p < target; ++p) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(p) * inv_freq_[i];
        cos_[p * half + i] = static_cast<float>(std::cos(angle) * mscale_);
        sin_[p * half + i] = static_cast<float>(std::sin(angle) * mscale_);
      }
    }
    table_.cos = cos_.data();
    table_.sin = sin_.data();
    table_.num_positions = target;
  }
  return table_;
}

}  // namespace dserve::models
