// StepGraphs: decode steps replayed from graphs the backend recorded at start-up (CUDA graphs:
// a step of a few hundred small kernels becomes one launch). One graph per batch-size bucket
// and rows per sequence (1, or 1 + drafts when MTP drafts are verified); a smaller batch runs
// in the next bucket up, padded with one-page sequences on a scratch page whose outputs are
// dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/latent_cache.h"
#include "kernels/ops.h"
#include "models/deepseek_model.h"

namespace dserve::models {

struct StepGraphOptions {
  std::vector<int64_t> batch_sizes;              // the buckets (sequences per step)
  std::vector<int64_t> rows_per_sequence = {1};  // each sequence's new tokens in a step
  // The most tokens a sequence holds: block tables are sized for it, and the RoPE table is
  // made for every position below it before the first recording.
  int64_t max_context = 0;
  // A cache page no sequence uses: padding sequences write their latents there.
  int32_t scratch_page = -1;
  // Graphs of more rows (batch x rows per sequence) than a step can hold are not recorded
  // (the scheduler's token budget); 0: no limit.
  int64_t max_rows_per_step = 0;
  bool show_progress = true;
};

// The buckets vLLM-style: 1, 2, 4, 8, then steps of about 1.5x up to `max_batch` (included).
std::vector<int64_t> DefaultGraphBatchSizes(int64_t max_batch);

class StepGraphs {
 public:
  // Runs one eager step of the largest shape (the ops make what they make once: expert tables,
  // counters, the RoPE table; it also measures the activations a recording needs; its routing
  // is not counted as expert load), then records every graph, most rows first. Fails with the
  // backend's reason (Unimplemented on the CPU and for EP/TP models). `cache` must outlive the
  // graphs, as must the model's backend.
  //
  // A replay computes what the eager step of the padded batch computes, bit for bit; for a
  // batch that is not a bucket size that can differ in rounding from the unpadded eager step
  // (the attention's key split and the GEMMs' tiling follow the batch).
  static absl::StatusOr<std::unique_ptr<StepGraphs>> Capture(DeepseekModel& model,
                                                             kernels::LatentCache& cache,
                                                             const StepGraphOptions& options);

  // Whether a graph runs this step: every slice has one recorded row count, the logits of
  // every row in order are asked for, no trace, no more sequences than the largest bucket, and
  // every sequence within max_context.
  bool Covers(const ForwardInput& in) const;
  // The step through its graph; `in` as Covers accepted. out->hidden is valid until the next
  // step.
  absl::Status Run(const ForwardInput& in, ForwardOutput* out);

  int64_t num_graphs() const { return static_cast<int64_t>(graphs_.size()); }

 private:
  struct Graph {
    int64_t batch = 0, rows = 0;
    std::unique_ptr<kernels::StepGraph> graph;
  };
  StepGraphs(DeepseekModel& model, kernels::LatentCache& cache, const StepGraphOptions& options);
  // The smallest graph for `n` sequences of `rows` rows each, or null.
  Graph* Find(int64_t n, int64_t rows);
  const Graph* Find(int64_t n, int64_t rows) const;
  // A step of `batch` sequences of `rows` rows on the scratch page; the first sequence at the
  // longest position when `longest`. Fills the members below.
  ForwardInput MakeScratchStep(int64_t batch, int64_t rows, bool longest);
  // `in` padded to `batch` sequences, in the members below.
  ForwardInput Pad(const ForwardInput& in, int64_t batch);
  // The step the members below hold.
  ForwardInput Input() const;
  absl::Status Record(int64_t batch, int64_t rows, int64_t arena_bytes);

  DeepseekModel& model_;
  kernels::LatentCache& cache_;
  StepGraphOptions options_;
  int64_t max_pages_ = 0;
  std::vector<Graph> graphs_;  // by rows, then batch, ascending
  // Where every graph leaves its outputs (prefixes of these): made before the first
  // recording, outside the graphs' arena. Valid until the next replay.
  Tensor logits_, hidden_;
  // A step's inputs, reused.
  std::vector<int32_t> tokens_, positions_, logit_rows_, scratch_table_;
  kernels::AttentionBatch batch_;
};

}  // namespace dserve::models
