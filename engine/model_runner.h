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
#include "models/step_graphs.h"

namespace dserve::engine {

struct RunnerOutput {
  // [rows, vocab]: for each item, the logits of its last row, or of its last 1 + num_drafts
  // rows when it carries drafts (each draft's row checks the draft).
  std::vector<float> logits;
  std::vector<size_t> items;       // indices into SchedulerOutput::work that reached their end
  std::vector<int64_t> logit_row;  // per item: its first row in `logits`
  std::vector<int64_t> batch_row;  // per work item: its first row in the flattened batch
  const Tensor* hidden = nullptr;  // [batch rows, hidden]: the last hidden states (for MTP)
};

// Appends the slices of rows [begin, end) of `seq` (flattened rows from row_begin on) to
// `batch`: its prompt tokens attend in the naive form, its generated tokens in the absorbed
// one. The positions are the caller's.
void AppendSlices(const Sequence& seq, std::span<const int32_t> block_table, int64_t begin,
                  int64_t end, int64_t row_begin, kernels::AttentionBatch* batch);

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
  // Decode steps a graph covers replay it (null: every step eager). Not owned.
  void set_graphs(models::StepGraphs* graphs) { graphs_ = graphs; }
  // Whether the last Run replayed a graph.
  bool last_step_graphed() const { return last_graphed_; }

 private:
  models::DeepseekModel& model_;
  kernels::LatentCache& cache_;
  const KvCacheManager& kv_;
  kernels::MlaMode mla_mode_;
  models::StepGraphs* graphs_ = nullptr;
  bool last_graphed_ = false;
  // Reused across steps.
  std::vector<int32_t> tokens_, positions_, logit_rows_;
  models::ForwardOutput fwd_;
};

}  // namespace dserve::engine
