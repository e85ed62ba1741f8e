#include "models/ep_volume.h"

#include <vector>

namespace dserve::models {
namespace {

EpVolume FromCounts(double remote_ranks, double remote_pairs, int64_t hidden) {
  EpVolume v;
  v.remote_ranks = remote_ranks;
  v.dispatch_bytes = remote_ranks * (static_cast<double>(hidden) + 4.0 * hidden / 128.0);
  v.combine_bytes = remote_ranks * 2.0 * static_cast<double>(hidden);
  v.remote_pairs = remote_pairs;
  v.pair_bytes = remote_pairs * (8.0 * static_cast<double>(hidden) + 4.0);
  return v;
}

}  // namespace

EpVolume UniformEpVolume(int64_t experts, int64_t top_k, int ep, int64_t hidden) {
  // P(a given other rank holds none of the k experts) = prod_i (E - E/ep - i) / (E - i).
  const int64_t per = experts / ep;
  double none = 1.0;
  for (int64_t i = 0; i < top_k; ++i) {
    none *= static_cast<double>(experts - per - i) / static_cast<double>(experts - i);
  }
  return FromCounts((ep - 1) * (1.0 - none), static_cast<double>(top_k) * (ep - 1) / ep, hidden);
}

EpVolume CountedEpVolume(std::span<const int32_t> ids, int64_t top_k, int64_t experts, int ep,
                         int64_t hidden) {
  const int64_t tokens = static_cast<int64_t>(ids.size()) / top_k;
  const int64_t per = experts / ep;
  std::vector<char> touched(static_cast<size_t>(ep));
  int64_t remote = 0, pairs = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    std::fill(touched.begin(), touched.end(), 0);
    const int home = static_cast<int>(t % ep);
    for (int64_t k = 0; k < top_k; ++k) {
      const int owner = static_cast<int>(ids[t * top_k + k] / per);
      touched[owner] = 1;
      pairs += owner != home;
    }
    for (int r = 0; r < ep; ++r) remote += (r != home && touched[r]);
  }
  const double n = tokens > 0 ? static_cast<double>(tokens) : 1.0;
  return FromCounts(static_cast<double>(remote) / n, static_cast<double>(pairs) / n, hidden);
}

}  // namespace dserve::models
