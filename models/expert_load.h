// ExpertLoad: how many tokens the router sent to each routed expert of each MoE layer since the
// model was loaded. DeepSeekMoE's fine-grained experts only pay off when load stays balanced;
// the server exposes these counts as metrics. Written by the forward pass, read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace dserve::models {

class ExpertLoad {
 public:
  // layers: the model layer number of every MoE layer (the MTP layer included), in order.
  ExpertLoad(std::vector<int> layers, int num_experts);

  // Counts one routing result: ids of n (token, slot) choices of MoE layer `layer`.
  void Record(int layer, const int32_t* ids, int64_t n);
  // Adds per-expert counts [num_experts] to layers()[index] (a backend that counts itself).
  void AddCounts(size_t index, const int64_t* counts);

  const std::vector<int>& layers() const { return layers_; }
  int num_experts() const { return num_experts_; }
  // [i][e]: tokens routed to expert e of layers()[i].
  std::vector<std::vector<int64_t>> Snapshot() const;

 private:
  std::vector<int> layers_;
  std::vector<int> slot_of_layer_;  // model layer -> index into layers_, -1 when dense
  int num_experts_;
  std::unique_ptr<std::atomic<int64_t>[]> counts_;  // [layers_.size()][num_experts_]
};

}  // namespace dserve::models
