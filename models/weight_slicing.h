// Slices of a checkpoint weight for tensor parallelism: a rank's rows (column-parallel
// projections: its heads of q_b / kv_b, its part of an MLP's gate and up) or columns
// (row-parallel ones: o_proj, down_proj). FP8 slices stay FP8 with their scales where they
// start and end on 128x128 block boundaries (every DeepSeek-V3 slice at TP 2..8); otherwise
// the slice is dequantised to F32 (exact values: fp8 * scale rounded once, as a kernel sees
// them after its scale).
#pragma once

#include <cstdint>

#include "kernels/weight.h"

namespace dserve::models {

// Rows [begin, begin + count): a view of the mapped weight where possible (BF16/F16/F32, or
// FP8 on block boundaries), else an F32 copy.
kernels::Weight SliceRows(const kernels::Weight& w, int64_t begin, int64_t count);
// Columns [begin, begin + count): always a copy (the rows are strided), in the stored dtype
// (FP8 with its scale columns on block boundaries), else F32.
kernels::Weight SliceCols(const kernels::Weight& w, int64_t begin, int64_t count);

}  // namespace dserve::models
