// Device-side reads of a WeightView: element (r, c) as F32, exactly (every stored dtype widens
// to F32 without rounding; FP8 is decoded as E4M3fn, 0x7F/0xFF NaN, then multiplied by its
// block's scale in F32, as the CPU backend does). For .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/cuda/weight_view.h"

namespace dserve::kernels::cuda {

__device__ __forceinline__ float DecodeE4M3(uint8_t b) {
  __nv_fp8_e4m3 v;
  v.__x = b;
  return static_cast<float>(v);
}

// The raw element without its FP8 block scale (callers that apply one scale per block).
__device__ __forceinline__ float WeightRaw(const WeightView& w, int64_t r, int64_t c) {
  const int64_t i = r * w.cols + c;
  switch (w.type) {
    case WeightType::kF32: return static_cast<const float*>(w.data)[i];
    case WeightType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(w.data)[i]);
    case WeightType::kF16: return __half2float(static_cast<const __half*>(w.data)[i]);
    case WeightType::kFp8E4M3: return DecodeE4M3(static_cast<const uint8_t*>(w.data)[i]);
  }
  return 0.0f;
}

// The FP8 block scale of element (r, c); 1 for the other dtypes.
__device__ __forceinline__ float WeightScale(const WeightView& w, int64_t r, int64_t c) {
  if (w.type != WeightType::kFp8E4M3) return 1.0f;
  const int64_t scale_cols = (w.cols + w.block_cols - 1) / w.block_cols;
  return w.scale_inv[(r / w.block_rows) * scale_cols + c / w.block_cols];
}

// The real value of element (r, c).
__device__ __forceinline__ float WeightAt(const WeightView& w, int64_t r, int64_t c) {
  return WeightRaw(w, r, c) * WeightScale(w, r, c);
}

}  // namespace dserve::kernels::cuda
