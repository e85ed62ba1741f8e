#include "models/step_graphs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace dserve::models {

std::vector<int64_t> DefaultGraphBatchSizes(int64_t max_batch) {
  std::vector<int64_t> sizes;
  if (max_batch < 1) return sizes;
  for (int64_t b = 1; b <= std::min<int64_t>(max_batch, 8); b *= 2) sizes.push_back(b);
  // 8, 12, 16, 24, 32, 48, 64, ...: padding wastes at most a third of a step.
  for (int64_t b = 12; b <= max_batch; b = (b % 3 == 0) ? b / 3 * 4 : b / 2 * 3) {
    sizes.push_back(b);
  }
  if (sizes.back() != max_batch) sizes.push_back(max_batch);
  return sizes;
}

StepGraphs::StepGraphs(DeepseekModel& model, kernels::LatentCache& cache,
                       const StepGraphOptions& options)
    : model_(model), cache_(cache), options_(options) {
  const int64_t page = cache.shape().page_size;
  max_pages_ = (options.max_context + page - 1) / page;
}

absl::StatusOr<std::unique_ptr<StepGraphs>> StepGraphs::Capture(DeepseekModel& model,
                                                                kernels::LatentCache& cache,
                                                                const StepGraphOptions& options) {
  StepGraphOptions o = options;
  std::sort(o.batch_sizes.begin(), o.batch_sizes.end());
  o.batch_sizes.erase(std::unique(o.batch_sizes.begin(), o.batch_sizes.end()),
                      o.batch_sizes.end());
  std::sort(o.rows_per_sequence.begin(), o.rows_per_sequence.end());
  o.rows_per_sequence.erase(std::unique(o.rows_per_sequence.begin(), o.rows_per_sequence.end()),
                            o.rows_per_sequence.end());
  if (o.batch_sizes.empty() || o.batch_sizes.front() < 1 || o.rows_per_sequence.empty() ||
      o.rows_per_sequence.front() < 1) {
    return absl::InvalidArgumentError("step graphs need batch sizes and rows per sequence >= 1");
  }
  const kernels::LatentCacheShape& s = cache.shape();
  if (o.scratch_page < 0 || o.scratch_page >= s.num_pages) {
    return absl::InvalidArgumentError(
        absl::StrCat("the scratch page ", o.scratch_page, " is not a page of the cache (",
                     s.num_pages, ")"));
  }
  if (o.max_context < o.rows_per_sequence.back() ||
      o.max_context > model.config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the step graphs' context ", o.max_context, " must hold a step's rows and stay within "
        "the model's ", model.config().max_position_embeddings));
  }
  if (o.rows_per_sequence.back() > s.page_size) {
    return absl::InvalidArgumentError("a padding sequence's rows must fit the scratch page");
  }
  if (model.parallel().parallel()) {
    return absl::UnimplementedError("step graphs are not recorded for EP/TP models yet");
  }
  // Every (batch, rows) shape a step can have, most rows first: the first recording sizes
  // the arena the others share.
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t rows : o.rows_per_sequence) {
    for (int64_t b : o.batch_sizes) {
      if (o.max_rows_per_step <= 0 || b * rows <= o.max_rows_per_step) shapes.push_back({b, rows});
    }
  }
  if (shapes.empty()) {
    return absl::InvalidArgumentError("no step graph shape fits the step's row limit");
  }
  std::stable_sort(shapes.begin(), shapes.end(), [](const auto& a, const auto& b) {
    return a.first * a.second > b.first * b.second;
  });
  std::unique_ptr<StepGraphs> graphs(new StepGraphs(model, cache, o));
  kernels::Ops& ops = model.ops();

  // The eager step of the largest shape, not counted as expert load.
  ops.ResetActivationPeak();
  {
    const ForwardInput in = graphs->MakeScratchStep(shapes[0].first, shapes[0].second, true);
    ForwardOutput out;
    model.set_count_expert_load(false);
    const absl::Status s = model.Forward(in, cache, &out);
    model.set_count_expert_load(true);
    DSERVE_RETURN_IF_ERROR(s);
  }
  if (!model.expert_counters_ready() && model.config().n_routed_experts > 0) {
    return absl::FailedPreconditionError(
        "the expert-load counters could not be placed on the device");
  }
  // Room for fragmentation: first fit over the same allocations is not the pool's placement.
  // Plus the most any shape's backend buffers need (a padded plan's workspace depends on the
  // rows per sequence, not only on the total), so the first recording sizes the one arena.
  int64_t extra = 0;
  for (const auto& [batch, rows] : shapes) {
    const ForwardInput in = graphs->MakeScratchStep(batch, rows, false);
    kernels::StepGraphInput si{in.tokens, &in.batch, in.logit_rows, &cache, model.local_heads()};
    DSERVE_ASSIGN_OR_RETURN(const int64_t bytes, ops.StepGraphExtraBytes(si));
    extra = std::max(extra, bytes);
  }
  const int64_t arena = ops.ActivationPeakBytes() / 4 * 5 + (64 << 20) + extra;
  const int64_t most = shapes[0].first * shapes[0].second;
  graphs->logits_ = ops.Empty(DType::kF32, {most, model.config().vocab_size});
  graphs->hidden_ = ops.Empty(DType::kF32, {most, model.config().hidden_size});
  DSERVE_RETURN_IF_ERROR(ops.TakeError());

  int64_t done = 0;
  for (const auto& [batch, rows] : shapes) {
    DSERVE_RETURN_IF_ERROR(graphs->Record(batch, rows, arena));
    if (o.show_progress) {
      std::fprintf(stderr, "\rrecording step graphs: %lld/%lld", static_cast<long long>(++done),
                   static_cast<long long>(shapes.size()));
    }
  }
  if (o.show_progress) std::fprintf(stderr, "\n");
  std::sort(graphs->graphs_.begin(), graphs->graphs_.end(), [](const Graph& a, const Graph& b) {
    return a.rows != b.rows ? a.rows < b.rows : a.batch < b.batch;
  });
  return graphs;
}

absl::Status StepGraphs::Record(int64_t batch, int64_t rows, int64_t arena_bytes) {
  const ForwardInput in = MakeScratchStep(batch, rows, false);
  DSERVE_RETURN_IF_ERROR(model_.ValidateForward(in, cache_));
  kernels::StepGraphInput si{in.tokens, &in.batch, in.logit_rows, &cache_,
                             model_.local_heads()};
  DSERVE_RETURN_IF_ERROR(model_.ops().BeginStepGraph(si, arena_bytes));
  Graph g;
  g.batch = batch;
  g.rows = rows;
  Tensor logits = logits_.Rows(0, batch * rows), hidden = hidden_.Rows(0, batch * rows);
  model_.ForwardOnDevice(in, cache_, logits, hidden);
  absl::StatusOr<std::unique_ptr<kernels::StepGraph>> graph = model_.ops().EndStepGraph();
  if (!graph.ok()) {
    return absl::Status(graph.status().code(),
                        absl::StrCat("batch ", batch, ", ", rows, " rows per sequence: ",
                                     graph.status().message()));
  }
  g.graph = std::move(graph).value();
  graphs_.push_back(std::move(g));
  return absl::OkStatus();
}

ForwardInput StepGraphs::MakeScratchStep(int64_t batch, int64_t rows, bool longest) {
  const int64_t T = batch * rows;
  tokens_.assign(T, 0);
  positions_.resize(T);
  logit_rows_.resize(T);
  std::iota(logit_rows_.begin(), logit_rows_.end(), 0);
  scratch_table_.assign(max_pages_, options_.scratch_page);
  batch_.sequences.clear();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t cached = longest && b == 0 ? options_.max_context - rows : 0;
    batch_.sequences.push_back({b * rows, rows, cached, scratch_table_});
    for (int64_t i = 0; i < rows; ++i) positions_[b * rows + i] = static_cast<int32_t>(cached + i);
  }
  return Input();
}

ForwardInput StepGraphs::Input() const {
  ForwardInput in;
  in.tokens = tokens_;
  in.batch.positions = positions_;
  in.batch.sequences = batch_.sequences;
  in.logit_rows = logit_rows_;
  return in;
}

const StepGraphs::Graph* StepGraphs::Find(int64_t n, int64_t rows) const {
  for (const Graph& g : graphs_) {
    if (g.rows == rows && g.batch >= n) return &g;
  }
  return nullptr;
}

StepGraphs::Graph* StepGraphs::Find(int64_t n, int64_t rows) {
  return const_cast<Graph*>(static_cast<const StepGraphs*>(this)->Find(n, rows));
}

bool StepGraphs::Covers(const ForwardInput& in) const {
  if (in.trace || in.batch.sequences.empty()) return false;
  const int64_t n = static_cast<int64_t>(in.batch.sequences.size());
  const int64_t rows = in.batch.sequences.front().num_tokens;
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  if (T != n * rows || static_cast<int64_t>(in.logit_rows.size()) != T) return false;
  for (const kernels::SequenceSlice& seq : in.batch.sequences) {
    if (seq.num_tokens != rows || seq.cached_tokens + rows > options_.max_context ||
        static_cast<int64_t>(seq.block_table.size()) > max_pages_) {
      return false;
    }
  }
  for (int64_t i = 0; i < T; ++i) {
    if (in.logit_rows[i] != i) return false;
  }
  return Find(n, rows) != nullptr;
}

ForwardInput StepGraphs::Pad(const ForwardInput& in, int64_t batch) {
  const int64_t n = static_cast<int64_t>(in.batch.sequences.size());
  const int64_t rows = in.batch.sequences.front().num_tokens;
  tokens_.assign(in.tokens.begin(), in.tokens.end());
  positions_.assign(in.batch.positions.begin(), in.batch.positions.end());
  batch_.sequences = in.batch.sequences;
  scratch_table_.assign(1, options_.scratch_page);
  for (int64_t b = n; b < batch; ++b) {
    batch_.sequences.push_back({b * rows, rows, 0, scratch_table_});
    for (int64_t i = 0; i < rows; ++i) {
      tokens_.push_back(0);
      positions_.push_back(static_cast<int32_t>(i));
    }
  }
  logit_rows_.resize(batch * rows);
  std::iota(logit_rows_.begin(), logit_rows_.end(), 0);
  return Input();
}

absl::Status StepGraphs::Run(const ForwardInput& in, ForwardOutput* out) {
  if (!Covers(in)) return absl::InvalidArgumentError("no step graph covers this step");
  const int64_t n = static_cast<int64_t>(in.batch.sequences.size());
  const int64_t rows = in.batch.sequences.front().num_tokens;
  Graph& g = *Find(n, rows);
  const ForwardInput padded = Pad(in, g.batch);
  DSERVE_RETURN_IF_ERROR(model_.ValidateForward(padded, cache_));
  kernels::StepGraphInput si{padded.tokens, &padded.batch, padded.logit_rows, &cache_,
                             model_.local_heads(), n * rows};
  DSERVE_RETURN_IF_ERROR(g.graph->Replay(si));
  out->hidden = hidden_.Rows(0, n * rows);
  return model_.FinishStep(logits_, n * rows, out);
}

}  // namespace dserve::models
