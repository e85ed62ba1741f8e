#include "kernels/cuda/step_metadata.h"

#include "core/check.h"

namespace dserve::kernels::cuda {
namespace {

// Query rows of one CTA in the tensor-core MLA kernel (mla/decode.h's largest row tile).
constexpr int64_t kDecodeTileRows = 64;

}  // namespace

void CacheSlotOffsets(const AttentionBatch& batch, const LatentCache& cache, int64_t rows,
                      std::vector<int64_t>* offsets) {
  const LatentCacheShape& s = cache.shape();
  offsets->clear();
  offsets->reserve(rows);
  for (const SequenceSlice& seq : batch.sequences) {
    DSERVE_CHECK(seq.row_begin == static_cast<int64_t>(offsets->size()))
        << "slices must tile the rows in order";
    DSERVE_CHECK(static_cast<int64_t>(seq.block_table.size()) * s.page_size >=
                 seq.cached_tokens + seq.num_tokens)
        << "block table of " << seq.block_table.size() << " pages cannot hold "
        << seq.cached_tokens + seq.num_tokens << " tokens";
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int64_t index = seq.cached_tokens + i;
      const int32_t page = seq.block_table[index / s.page_size];
      DSERVE_CHECK(page >= 0 && page < s.num_pages) << "page " << page;
      offsets->push_back(cache.ByteOffset(0, page, index % s.page_size));
    }
  }
  DSERVE_CHECK(static_cast<int64_t>(offsets->size()) == rows) << "slices must cover the rows";
}

void MlaRowsAndTables(const AttentionBatch& batch, const LatentCacheShape& s, int64_t rows,
                      std::vector<int32_t>* row_info, std::vector<int32_t>* tables) {
  row_info->assign(2 * rows, 0);
  tables->clear();
  int64_t covered = 0;
  for (const SequenceSlice& seq : batch.sequences) {
    DSERVE_CHECK(seq.row_begin == covered) << "slices must tile the rows in order";
    DSERVE_CHECK(static_cast<int64_t>(seq.block_table.size()) * s.page_size >=
                 seq.cached_tokens + seq.num_tokens)
        << "block table too short";
    for (int32_t page : seq.block_table) {
      DSERVE_CHECK(page >= 0 && page < s.num_pages) << "page " << page;
    }
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      (*row_info)[seq.row_begin + i] = static_cast<int32_t>(seq.cached_tokens + i + 1);
      (*row_info)[rows + seq.row_begin + i] = static_cast<int32_t>(tables->size());
    }
    tables->insert(tables->end(), seq.block_table.begin(), seq.block_table.end());
    covered += seq.num_tokens;
  }
  DSERVE_CHECK(covered == rows) << "slices cover " << covered << " of " << rows << " rows";
}

void MlaDecodeGroups(const AttentionBatch& batch, const std::vector<int32_t>& row_info,
                     int64_t rows, int64_t heads, std::vector<MlaDecodeSequence> groups[2]) {
  groups[0].clear();
  groups[1].clear();
  for (const SequenceSlice& seq : batch.sequences) {
    if (seq.num_tokens == 0) continue;
    const bool chunk = seq.num_tokens * heads > kDecodeTileRows;
    groups[chunk].push_back({static_cast<int32_t>(seq.row_begin),
                             static_cast<int32_t>(seq.num_tokens),
                             static_cast<int32_t>(seq.cached_tokens + seq.num_tokens),
                             row_info[rows + seq.row_begin]});
  }
}

cudaError_t PlanMlaDecodeGroup(const std::vector<MlaDecodeSequence>& group, int64_t heads,
                               int sms, bool for_graph, MlaDecodePlan* plan) {
  const cudaError_t e = PlanMlaDecode(group.data(), group.size(), heads, sms, plan);
  if (e != cudaSuccess || !for_graph || group.empty()) return e;
  return PadMlaDecodePlanForGraph(sms, plan);
}

}  // namespace dserve::kernels::cuda
