// ShardWeights: a full binding of the checkpoint cut down to one rank's part before anything is
// placed on its device (so a rank never reads or uploads what it does not hold): its routed
// experts with EP, its heads and MLP rows with TP (weight_slicing.h).
#pragma once

#include "models/config.h"
#include "models/parallel_config.h"
#include "models/weights.h"

namespace dserve::models {

void ShardWeights(const ModelConfig& config, const ParallelConfig& parallel, ModelWeights* w);

}  // namespace dserve::models
