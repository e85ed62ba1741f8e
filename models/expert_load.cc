#include "models/expert_load.h"

#include <algorithm>

namespace dserve::models {

ExpertLoad::ExpertLoad(std::vector<int> layers, int num_experts)
    : layers_(std::move(layers)), num_experts_(num_experts) {
  const int max_layer = layers_.empty() ? -1 : *std::max_element(layers_.begin(), layers_.end());
  slot_of_layer_.assign(max_layer + 1, -1);
  for (size_t i = 0; i < layers_.size(); ++i) slot_of_layer_[layers_[i]] = static_cast<int>(i);
  const size_t n = layers_.size() * static_cast<size_t>(num_experts_);
  counts_ = std::make_unique<std::atomic<int64_t>[]>(n);
  for (size_t i = 0; i < n; ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void ExpertLoad::Record(int layer, const int32_t* ids, int64_t n) {
  if (layer < 0 || layer >= static_cast<int>(slot_of_layer_.size())) return;
  const int slot = slot_of_layer_[layer];
  if (slot < 0) return;
  // Tally locally first: one atomic add per expert, not per token.
  std::vector<int64_t> tally(num_experts_, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] >= 0 && ids[i] < num_experts_) ++tally[ids[i]];
  }
  std::atomic<int64_t>* row = counts_.get() + static_cast<size_t>(slot) * num_experts_;
  for (int e = 0; e < num_experts_; ++e) {
    if (tally[e]) row[e].fetch_add(tally[e], std::memory_order_relaxed);
  }
}

void ExpertLoad::AddCounts(size_t index, const int64_t* counts) {
  if (index >= layers_.size()) return;
  std::atomic<int64_t>* row = counts_.get() + index * num_experts_;
  for (int e = 0; e < num_experts_; ++e) {
    if (counts[e]) row[e].fetch_add(counts[e], std::memory_order_relaxed);
  }
}

std::vector<std::vector<int64_t>> ExpertLoad::Snapshot() const {
  std::vector<std::vector<int64_t>> out(layers_.size(), std::vector<int64_t>(num_experts_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    for (int e = 0; e < num_experts_; ++e) {
      out[i][e] = counts_[i * num_experts_ + e].load(std::memory_order_relaxed);
    }
  }
  return out;
}

}  // namespace dserve::models
