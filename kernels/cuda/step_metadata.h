// The per-step arrays the MLA kernels read, derived on the host from a step's batch: the cache
// slot of each new token, each row's visible keys and block table, the tensor-core kernel's
// sequences. CudaOps builds them for every eager step; a step graph rebuilds them before each
// replay, so both paths share these functions.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/mla/decode.h"
#include "kernels/latent_cache.h"

namespace dserve::kernels::cuda {

// Byte offsets, from a layer's first page, of the slot each row's new token is written to (the
// same for every layer). Checks that the slices tile the rows and their tables hold them.
void CacheSlotOffsets(const AttentionBatch& batch, const LatentCache& cache, int64_t rows,
                      std::vector<int64_t>* offsets);

// row_info [2 * rows]: per row the cached tokens it sees (causal), then per row where its
// sequence's block table starts in `tables` (the slices' tables concatenated).
void MlaRowsAndTables(const AttentionBatch& batch, const LatentCacheShape& shape, int64_t rows,
                      std::vector<int32_t>* row_info, std::vector<int32_t>* tables);

// The tensor-core kernel's two launches: sequences whose rows fit one 64-row tile (decodes,
// drafts being verified), and longer chunks. One plan sizes every CTA's row tiles by its
// largest sequence, so a prefill chunk among decodes would leave the decodes few key splits.
void MlaDecodeGroups(const AttentionBatch& batch, const std::vector<int32_t>& row_info,
                     int64_t rows, int64_t heads, std::vector<MlaDecodeSequence> groups[2]);

// PlanMlaDecode, padded to a graph's fixed shape when `for_graph`.
cudaError_t PlanMlaDecodeGroup(const std::vector<MlaDecodeSequence>& group, int64_t heads,
                               int sms, bool for_graph, MlaDecodePlan* plan);

}  // namespace dserve::kernels::cuda
