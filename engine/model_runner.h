// ModelRunner: packs one step's scheduled work into a single flattened forward batch (token
// ids, positions, per-sequence slices over their block tables, the rows that need logits) and
// runs the model once.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/kv_cache_manager.h"
#include "engine/scheduler.h"
#include "kernels/latent_cache.h"
#include "models/deepseek_model.h"

namespace dserve::engine {

struct RunnerOutput {
  std::vector<float> logits;    // [items.size(), vocab]
  std::vector<size_t> items;    // indices into SchedulerOutput::work that reached their end
};

class ModelRunner {
 public:
  // mla_mode: kAuto lets each token take the form fixed by its role (below); anything else
  // forces that form everywhere.
  ModelRunner(models::DeepseekModel& model, kernels::LatentCache& cache, const KvCacheManager& kv,
              kernels::MlaMode mla_mode);

  // Runs the work's tokens; a work item whose chunk reaches the end of its tokens gets the
  // logits of its last row. Prompt tokens attend in the naive form and generated tokens in
  // the absorbed one, so a token's result does not depend on how it was chunked or batched
  // (preemption recomputes generated tokens inside a prefill and must get the same bits).
  absl::Status Run(const SchedulerOutput& work, RunnerOutput* out);

 private:
  models::DeepseekModel& model_;
  kernels::LatentCache& cache_;
  const KvCacheManager& kv_;
  kernels::MlaMode mla_mode_;
  // Reused across steps.
  std::vector<int32_t> tokens_, positions_, logit_rows_;
  models::ForwardOutput fwd_;
};

}  // namespace dserve::engine
