#include "models/weight_sharding.h"

#include "models/weight_slicing.h"

namespace dserve::models {
namespace {

// Column-parallel gate/up (this rank's rows), row-parallel down (the same columns).
void ShardMlp(MlpWeights& m, int parts, int index) {
  const int64_t rows = m.gate.rows / parts, first = rows * index;
  m.gate = SliceRows(m.gate, first, rows);
  m.up = SliceRows(m.up, first, rows);
  m.down = SliceCols(m.down, first, rows);
}

void ShardBlock(const ModelConfig& c, const ParallelConfig& p, BlockWeights& b) {
  if (p.tp_size > 1) {
    const int tp = p.tp_size, r = p.tp_rank();
    const int64_t heads = c.num_attention_heads / tp, h0 = heads * r;
    AttentionWeights& a = b.attn;
    if (c.q_lora_rank > 0) {
      a.q_b = SliceRows(a.q_b, h0 * c.qk_head_dim(), heads * c.qk_head_dim());
    } else {
      a.q = SliceRows(a.q, h0 * c.qk_head_dim(), heads * c.qk_head_dim());
    }
    const int64_t kv = c.qk_nope_head_dim + c.v_head_dim;
    a.kv_b = SliceRows(a.kv_b, h0 * kv, heads * kv);
    a.o = SliceCols(a.o, h0 * c.v_head_dim, heads * c.v_head_dim);
    if (!b.is_moe) ShardMlp(b.mlp, tp, r);
    if (b.is_moe && b.moe.shared) ShardMlp(*b.moe.shared, tp, r);
    if (b.is_moe && p.ep_size == 1) {
      for (MlpWeights& e : b.moe.experts) ShardMlp(e, tp, r);
    }
  }
  if (b.is_moe && p.ep_size > 1) {
    std::vector<MlpWeights>& experts = b.moe.experts;
    const int64_t count = static_cast<int64_t>(experts.size()) / p.ep_size;
    const int64_t first = count * p.ep_rank();
    experts = std::vector<MlpWeights>(experts.begin() + first, experts.begin() + first + count);
  }
}

}  // namespace

void ShardWeights(const ModelConfig& config, const ParallelConfig& parallel, ModelWeights* w) {
  if (!parallel.parallel()) return;
  for (BlockWeights& b : w->layers) ShardBlock(config, parallel, b);
  if (w->mtp) ShardBlock(config, parallel, w->mtp->block);
}

}  // namespace dserve::models
