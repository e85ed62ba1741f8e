// Sizing the latent KV cache on a GPU from --gpu-memory-utilization, as vLLM does: the share
// of the device's memory we may use, less the weights and the activations of the largest step
// the engine can run (measured by running it once).
#pragma once

#include "absl/status/statusor.h"
#include "cli/model_session.h"
#include "engine/engine_core.h"

namespace dserve::cli {

// Bytes left for the KV cache on the session's GPU; reports the split on stderr. Fails when
// the share leaves no room, naming the figures.
absl::StatusOr<double> GpuKvCacheBytes(const ModelSession& session,
                                       const engine::EngineConfig& config, double utilization);

}  // namespace dserve::cli
