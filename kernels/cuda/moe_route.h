// DeepSeekMoE's gate on the GPU, from router logits: scores (V3 sigmoid, V2 softmax), the bias
// that steers selection only, group-limited top-k (V2's best-expert or V3's best-two group
// ranking), then the chosen experts' weights, normalised and scaled as the config says. The
// same arithmetic order as the CPU op (sums in expert order, ties to the lower index), so both
// pick the same experts.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/router_config.h"

namespace dserve::kernels::cuda {

// logits [tokens, experts] F32, bias [experts] F32 or null -> ids [tokens, top_k] I32 and
// weights [tokens, top_k] F32, best first. experts <= 1024.
cudaError_t LaunchMoeRoute(const float* logits, const float* bias, const RouterConfig& config,
                           int64_t tokens, int32_t* ids, float* weights, cudaStream_t stream);

// counts[ids[i]] += 1 for i < n (atomics; ids outside [0, experts) are skipped). With
// `live_rows` (a device int), only i < *live_rows * per_row count: a graph's padding rows don't.
cudaError_t LaunchCountExperts(const int32_t* ids, int64_t n, int experts, uint32_t* counts,
                               const int32_t* live_rows, int per_row, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
