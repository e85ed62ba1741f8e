#include "engine/model_runner.h"

#include <algorithm>

namespace dserve::engine {

using kernels::MlaMode;

void AppendSlices(const Sequence& seq, std::span<const int32_t> block_table, int64_t begin,
                  int64_t end, int64_t row_begin, kernels::AttentionBatch* batch) {
  // At most two slices: the prompt part (naive form) and the generated part (absorbed).
  for (int64_t a = begin; a < end;) {
    const bool prompt = a < seq.prompt_len;
    const int64_t b = prompt ? std::min(end, seq.prompt_len) : end;
    kernels::SequenceSlice slice;
    slice.row_begin = row_begin + (a - begin);
    slice.num_tokens = b - a;
    slice.cached_tokens = a;
    slice.block_table = block_table;
    slice.mode = prompt ? MlaMode::kNaive : MlaMode::kAbsorbed;
    batch->sequences.push_back(slice);
    a = b;
  }
}

ModelRunner::ModelRunner(models::DeepseekModel& model, kernels::LatentCache& cache,
                         const KvCacheManager& kv, MlaMode mla_mode)
    : model_(model), cache_(cache), kv_(kv), mla_mode_(mla_mode) {}

absl::Status ModelRunner::Run(const SchedulerOutput& work, RunnerOutput* out) {
  tokens_.clear();
  positions_.clear();
  logit_rows_.clear();
  out->items.clear();
  out->logit_row.clear();
  out->batch_row.clear();
  models::ForwardInput in;
  for (size_t w = 0; w < work.work.size(); ++w) {
    const Sequence& seq = *work.work[w].seq;
    out->batch_row.push_back(static_cast<int64_t>(tokens_.size()));
    const int64_t begin = seq.num_computed, end = begin + work.work[w].num_tokens;
    AppendSlices(seq, kv_.BlockTable(seq.id), begin, end, static_cast<int64_t>(tokens_.size()),
                 &in.batch);
    for (int64_t i = begin; i < end; ++i) {
      tokens_.push_back(seq.tokens[i]);
      positions_.push_back(static_cast<int32_t>(i));
    }
    if (end == static_cast<int64_t>(seq.tokens.size())) {
      out->items.push_back(w);
      out->logit_row.push_back(static_cast<int64_t>(logit_rows_.size()));
      const int64_t last = static_cast<int64_t>(tokens_.size()) - 1;
      for (int64_t r = last - seq.num_drafts; r <= last; ++r) {
        logit_rows_.push_back(static_cast<int32_t>(r));
      }
    }
  }
  in.tokens = tokens_;
  in.batch.positions = positions_;
  in.logit_rows = logit_rows_;
  in.mla_mode = mla_mode_;
  fwd_.logits.swap(out->logits);  // reuse the previous step's logits buffer
  last_graphed_ = graphs_ != nullptr && graphs_->Covers(in);
  DSERVE_RETURN_IF_ERROR(last_graphed_ ? graphs_->Run(in, &fwd_)
                                       : model_.Forward(in, cache_, &fwd_));
  out->logits.swap(fwd_.logits);
  out->hidden = &fwd_.hidden;
  return absl::OkStatus();
}

}  // namespace dserve::engine
