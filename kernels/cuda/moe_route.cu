#include "kernels/cuda/moe_route.h"

#include <algorithm>

#include <math_constants.h>

namespace dserve::kernels::cuda {
namespace {

// Index of the largest of values[0, n) not yet taken, the lower index on ties (-1 if none).
__device__ int ArgMaxFree(const float* values, int n, const bool* taken) {
  int best = -1;
  for (int i = 0; i < n; ++i) {
    if (taken[i]) continue;
    if (best < 0 || values[i] > values[best]) best = i;
  }
  return best;
}

// One warp per token: lanes compute the scores, lane 0 ranks (serially, in expert order, as
// the CPU op does).
__global__ void RouteKernel(const float* logits, const float* bias, RouterConfig c, int32_t* ids,
                            float* weights) {
  extern __shared__ float shared[];
  const int E = c.num_experts;
  float* scores = shared;
  float* choice = shared + E;
  bool* taken = reinterpret_cast<bool*>(shared + 2 * E);
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * E;
  const int lane = threadIdx.x;
  if (c.scoring == ScoringFunc::kSoftmax) {
    if (lane == 0) {
      float mx = row[0];
      for (int e = 1; e < E; ++e) mx = fmaxf(mx, row[e]);
      float sum = 0.0f;
      for (int e = 0; e < E; ++e) sum += scores[e] = expf(row[e] - mx);
      for (int e = 0; e < E; ++e) scores[e] /= sum;
    }
  } else {
    for (int e = lane; e < E; e += 32) scores[e] = 1.0f / (1.0f + expf(-row[e]));
  }
  __syncwarp();
  for (int e = lane; e < E; e += 32) {
    choice[e] = scores[e] + (bias ? bias[e] : 0.0f);
    taken[e] = false;
  }
  __syncwarp();
  if (lane != 0) return;

  if (c.method != TopkMethod::kGreedy && c.n_group > 1) {
    const int per_group = E / c.n_group;
    float group_score[64];
    bool group_taken[64];
    for (int g = 0; g < c.n_group; ++g) {
      const float* v = choice + g * per_group;
      int best = 0;
      for (int i = 1; i < per_group; ++i) {
        if (v[i] > v[best]) best = i;
      }
      if (c.method == TopkMethod::kNoauxTc) {
        int second = best == 0 ? 1 : 0;
        for (int i = 0; i < per_group; ++i) {
          if (i != best && v[i] > v[second]) second = i;
        }
        // The CPU op sums the best and the second best in that order.
        group_score[g] = v[best] + v[second];
      } else {
        group_score[g] = v[best];
      }
      group_taken[g] = false;
    }
    bool keep[64] = {};
    for (int k = 0; k < c.topk_group; ++k) {
      const int g = ArgMaxFree(group_score, c.n_group, group_taken);
      group_taken[g] = true;
      keep[g] = true;
    }
    for (int e = 0; e < E; ++e) {
      if (!keep[e / per_group]) choice[e] = -CUDART_INF_F;
    }
  }

  int32_t* out_ids = ids + static_cast<int64_t>(blockIdx.x) * c.top_k;
  float* out_w = weights + static_cast<int64_t>(blockIdx.x) * c.top_k;
  float sum = 0.0f;
  for (int k = 0; k < c.top_k; ++k) {
    const int e = ArgMaxFree(choice, E, taken);
    taken[e] = true;
    out_ids[k] = e;
    out_w[k] = scores[e];
    sum += scores[e];
  }
  const bool normalize = c.top_k > 1 && c.norm_topk_prob;
  const bool scale = !(normalize && c.scale_only_unnormalized);
  for (int k = 0; k < c.top_k; ++k) {
    if (normalize) out_w[k] /= sum + 1e-20f;
    if (scale) out_w[k] *= c.routed_scaling_factor;
  }
}

}  // namespace

cudaError_t LaunchMoeRoute(const float* logits, const float* bias, const RouterConfig& config,
                           int64_t tokens, int32_t* ids, float* weights, cudaStream_t stream) {
  const int E = config.num_experts;
  if (E < 1 || E > 1024 || config.top_k < 1 || config.top_k > E || config.n_group < 1 ||
      config.n_group > 64 || E % config.n_group != 0 || config.topk_group < 1 ||
      config.topk_group > config.n_group ||
      (config.method == TopkMethod::kNoauxTc && config.n_group > 1 && E / config.n_group < 2)) {
    return cudaErrorInvalidValue;
  }
  if (tokens == 0) return cudaSuccess;
  const size_t shared = 2 * E * sizeof(float) + E * sizeof(bool);
  RouteKernel<<<static_cast<unsigned>(tokens), 32, shared, stream>>>(logits, bias, config, ids,
                                                                     weights);
  return cudaGetLastError();
}

namespace {

__global__ void CountExpertsKernel(const int32_t* ids, int64_t n, int experts, uint32_t* counts,
                                   const int32_t* live_rows, int per_row) {
  if (live_rows) n = min(n, static_cast<int64_t>(*live_rows) * per_row);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t e = ids[i];
    if (e >= 0 && e < experts) atomicAdd(counts + e, 1u);
  }
}

}  // namespace

cudaError_t LaunchCountExperts(const int32_t* ids, int64_t n, int experts, uint32_t* counts,
                               const int32_t* live_rows, int per_row, cudaStream_t stream) {
  if (n < 0 || experts < 1 || (live_rows && per_row < 1)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (!ids || !counts) return cudaErrorInvalidValue;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 1024);
  CountExpertsKernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(ids, n, experts, counts,
                                                                         live_rows, per_row);
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
