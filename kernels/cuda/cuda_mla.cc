// CudaOps' MLA: the latent-cache write and attention over the paged cache, with the per-row
// metadata (positions, slots, causal key counts, block tables) built on the host
// (step_metadata.h).
#include <algorithm>
#include <vector>

#include "core/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mla/decode.h"
#include "kernels/cuda/mla_attention.h"
#include "kernels/cuda/mla_cache.h"
#include "kernels/cuda/step_metadata.h"

namespace dserve::kernels::cuda {
namespace {

bool SameSequence(const MlaDecodeSequence& a, const MlaDecodeSequence& b) {
  return a.row_begin == b.row_begin && a.num_rows == b.num_rows && a.keys == b.keys &&
         a.table_offset == b.table_offset;
}

}  // namespace

void CudaOps::MlaWriteCache(const Tensor& kv_a, const Tensor& kv_norm, float eps,
                            const RopeTable& rope, const AttentionBatch& batch, LatentCache& cache,
                            int layer) {
  if (!Begin()) return;
  const LatentCacheShape& s = cache.shape();
  const int64_t T = kv_a.dim(0);
  DSERVE_CHECK(kv_a.dim(1) == s.kv_lora_rank + s.rope_dim) << "kv_a " << kv_a.ShapeString();
  DSERVE_CHECK(layer >= 0 && layer < s.num_layers) << "layer " << layer;
  DSERVE_CHECK(static_cast<int64_t>(batch.positions.size()) == T) << "positions for every row";
  DSERVE_CHECK(cache.storage().device() == Device::kCuda) << "the latent cache is not on cuda";
  CheckF32(kv_a, T, s.kv_lora_rank + s.rope_dim, "kv_a");
  DSERVE_CHECK(kv_norm.numel() == s.kv_lora_rank && kv_norm.device() == Device::kCuda &&
               kv_norm.dtype() == DType::kF32)
      << "kv_a_layernorm weight " << kv_norm.ShapeString();
  // Relative to the layer's first page: the same offsets for every layer of a step, so they
  // are uploaded once.
  std::vector<int64_t> offsets;
  CacheSlotOffsets(batch, cache, T, &offsets);
  for (int32_t pos : batch.positions) {
    DSERVE_CHECK(pos >= 0 && pos < rope.num_positions) << "position " << pos;
  }
  if (T == 0) return;
  StageRope(rope);
  const void* d_pos = Stage(positions_, batch.positions.data(), batch.positions.size_bytes());
  const void* d_off = Stage(offsets_, offsets.data(), offsets.size() * sizeof(int64_t));
  if (Failed()) return;
  MlaCacheWrite p;
  p.kv_a = kv_a.data<float>();
  p.rows = T;
  p.kv_lora = s.kv_lora_rank;
  p.rope_dim = s.rope_dim;
  p.kv_norm = kv_norm.data<float>();
  p.eps = eps;
  p.cos = rope_cos_.data<float>();
  p.sin = rope_sin_.data<float>();
  p.positions = static_cast<const int32_t*>(d_pos);
  p.slot_offsets = static_cast<const int64_t*>(d_off);
  p.cache = static_cast<uint8_t*>(cache.storage().raw()) + cache.ByteOffset(layer, 0, 0);
  p.format = FormatOf(s);
  RecordLaunch(LaunchMlaWriteCache(p, stream_), "MlaWriteCache");
}

// Every slice takes the absorbed form here, whatever MlaParams::mode says: it is the same
// function (the CPU tests check both forms against each other). The attention itself runs on
// the tensor cores (mla/decode.h: BF16 products, split over the keys) for BF16 and FP8 caches
// with GemmMode::kTensorCores; F32 caches and kExact take mla_attention.cu's F32 kernel.
void CudaOps::MlaAttention(const MlaParams& p, const Tensor& q, Tensor& out) {
  if (!Begin()) return;
  DSERVE_CHECK(p.batch && p.cache && p.kv_b && p.rope) << "MlaParams incomplete";
  const LatentCacheShape& s = p.cache->shape();
  const int64_t T = q.dim(0), H = p.num_heads;
  DSERVE_CHECK(p.kv_b->rows == H * (p.nope_dim + p.v_dim) && p.kv_b->cols == s.kv_lora_rank)
      << "kv_b is [" << p.kv_b->rows << ", " << p.kv_b->cols << "]";
  DSERVE_CHECK(p.rope_dim == s.rope_dim) << "rope_dim " << p.rope_dim;
  CheckF32(q, T, H * (p.nope_dim + p.rope_dim), "MLA queries");
  CheckF32(out, T, H * p.v_dim, "MLA output");
  DSERVE_CHECK(static_cast<int64_t>(p.batch->positions.size()) == T) << "positions for every row";
  // Per row: how many cached tokens it sees (causal) and where its block table starts.
  std::vector<int32_t> rows, tables;
  MlaRowsAndTables(*p.batch, s, T, &rows, &tables);
  for (int32_t pos : p.batch->positions) {
    DSERVE_CHECK(pos >= 0 && pos < p.rope->num_positions) << "position " << pos;
  }
  if (T == 0) return;
  StageRope(*p.rope);
  const void* d_pos = Stage(positions_, p.batch->positions.data(),
                            p.batch->positions.size_bytes());
  const void* d_rows = Stage(mla_rows_, rows.data(), rows.size() * sizeof(int32_t));
  const void* d_tables = Stage(mla_tables_, tables.data(), tables.size() * sizeof(int32_t));
  Tensor workspace = Empty(
      DType::kF32,
      {static_cast<int64_t>(MlaAttentionWorkspaceFloats(T, H, s.kv_lora_rank, s.rope_dim))});
  if (Failed()) return;
  MlaAttentionParams a;
  a.q = q.data<float>();
  a.rows = T;
  a.heads = H;
  a.nope_dim = p.nope_dim;
  a.rope_dim = p.rope_dim;
  a.v_dim = p.v_dim;
  a.kv_lora = s.kv_lora_rank;
  a.kv_b = ViewOf(*p.kv_b);
  a.cos = rope_cos_.data<float>();
  a.sin = rope_sin_.data<float>();
  a.positions = static_cast<const int32_t*>(d_pos);
  a.row_keys = static_cast<const int32_t*>(d_rows);
  a.row_table = static_cast<const int32_t*>(d_rows) + T;
  a.block_tables = static_cast<const int32_t*>(d_tables);
  a.cache = static_cast<const uint8_t*>(p.cache->storage().raw()) +
            p.cache->ByteOffset(p.layer, 0, 0);
  a.format = FormatOf(s);
  a.page_size = s.page_size;
  a.softmax_scale = p.softmax_scale;
  a.workspace = workspace.data<float>();
  a.out = out.data<float>();
  if (!UseDecodeKernel(s)) {
    RecordLaunch(LaunchMlaAttention(a, stream_), "MlaAttention");
    return;
  }
  std::vector<MlaDecodeSequence> groups[2];
  MlaDecodeGroups(*p.batch, rows, T, H, groups);
  RecordLaunch(LaunchMlaAbsorbQuery(a, stream_), "MlaAbsorbQuery");
  for (int g = 0; g < 2 && !Failed(); ++g) {
    if (groups[g].empty()) continue;
    DecodePlan& plan = decode_plans_[g];
    // The plan depends only on the step's sequences: made once, shared by every layer.
    // A recording takes the plan padded to the graph's fixed shape.
    if (groups[g].size() != plan.seqs.size() || H != plan.heads || capturing_ != plan.for_graph ||
        !std::equal(groups[g].begin(), groups[g].end(), plan.seqs.begin(), SameSequence)) {
      plan.seqs.clear();
      RecordLaunch(PlanMlaDecodeGroup(groups[g], H, sms_, capturing_, &plan.plan),
                   "PlanMlaDecode");
      if (Failed()) return;
      plan.seqs = std::move(groups[g]);
      plan.heads = H;
      plan.for_graph = capturing_;
    }
    const void* d_plan = Stage(plan.data, plan.plan.data.data(), plan.plan.data_bytes());
    const size_t split_bytes = MlaDecodeWorkspaceBytes(plan.plan.schedule, s.kv_lora_rank);
    Tensor splits = split_bytes > 0 ? Empty(DType::kU8, {static_cast<int64_t>(split_bytes)})
                                    : Tensor();
    if (Failed()) return;
    MlaDecodeParams d;
    d.q_cat = workspace.data<float>();
    d.o_lat = workspace.data<float>() + T * H * (s.kv_lora_rank + s.rope_dim);
    d.rows = T;
    d.heads = H;
    d.kv_lora = s.kv_lora_rank;
    d.rope_dim = s.rope_dim;
    d.cache = a.cache;
    d.format = a.format;
    d.page_size = s.page_size;
    d.token_bytes = s.token_bytes();
    d.block_tables = a.block_tables;
    d.schedule = plan.plan.schedule;
    d.plan_data = static_cast<const int32_t*>(d_plan);
    d.workspace = split_bytes > 0 ? splits.raw() : nullptr;
    d.workspace_bytes = split_bytes;
    RecordLaunch(LaunchMlaDecode(d, stream_), "MlaDecode");
  }
  if (Failed()) return;
  RecordLaunch(LaunchMlaOutput(a, stream_), "MlaOutput");
}

bool CudaOps::UseDecodeKernel(const LatentCacheShape& s) const {
  return options_.gemm == GemmMode::kTensorCores && s.dtype != DType::kF32 &&
         s.kv_lora_rank % 16 == 0 && s.kv_lora_rank <= kMlaDecodeMaxKvLora &&
         s.rope_dim % 16 == 0 && s.rope_dim <= kMlaDecodeMaxRope;
}

}  // namespace dserve::kernels::cuda
