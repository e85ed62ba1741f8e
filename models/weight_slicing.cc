#include "models/weight_slicing.h"

#include <cstring>

#include "core/check.h"

namespace dserve::models {
namespace {

using kernels::Weight;

float ValueAt(const Weight& w, int64_t r, int64_t c) {
  const uint8_t* row = w.row_bytes(r);
  switch (w.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, row + c * 4, 4);
      return f;
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, row + c * 2, 2);
      return Bf16ToFloat(h);
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, row + c * 2, 2);
      return F16ToFloat(h);
    }
    case DType::kF8E4M3:
      return Fp8E4M3ToFloat(row[c]) *
             w.scale_inv[(r / w.block_rows) * w.scale_cols() + c / w.block_cols];
    default: DSERVE_CHECK(false) << "weight dtype " << DTypeName(w.dtype);
  }
  return 0.0f;
}

// An F32 copy of the block [r0, r0 + rows) x [c0, c0 + cols).
Weight F32Copy(const Weight& w, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
  Weight out;
  out.dtype = DType::kF32;
  out.rows = rows;
  out.cols = cols;
  out.owned = Tensor::Zeros(DType::kF32, {rows, cols});
  float* dst = out.owned.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = ValueAt(w, r0 + r, c0 + c);
  }
  out.data = dst;
  return out;
}

bool OnBlocks(int64_t begin, int64_t count, int64_t total, int64_t block) {
  return begin % block == 0 && (count % block == 0 || begin + count == total);
}

}  // namespace

Weight SliceRows(const Weight& w, int64_t begin, int64_t count) {
  DSERVE_CHECK(begin >= 0 && count >= 0 && begin + count <= w.rows)
      << "rows [" << begin << ", " << begin + count << ") of " << w.rows;
  if (w.dtype == DType::kF8E4M3 && !OnBlocks(begin, count, w.rows, w.block_rows)) {
    return F32Copy(w, begin, count, 0, w.cols);
  }
  Weight out = w;
  out.rows = count;
  out.data = w.row_bytes(begin);
  if (w.dtype == DType::kF8E4M3) out.scale_inv = w.scale_inv + (begin / w.block_rows) * w.scale_cols();
  out.packed = Tensor();
  return out;
}

Weight SliceCols(const Weight& w, int64_t begin, int64_t count) {
  DSERVE_CHECK(begin >= 0 && count >= 0 && begin + count <= w.cols)
      << "columns [" << begin << ", " << begin + count << ") of " << w.cols;
  if (w.dtype == DType::kF8E4M3 && !OnBlocks(begin, count, w.cols, w.block_cols)) {
    return F32Copy(w, 0, w.rows, begin, count);
  }
  Weight out;
  out.dtype = w.dtype;
  out.rows = w.rows;
  out.cols = count;
  out.block_rows = w.block_rows;
  out.block_cols = w.block_cols;
  const int64_t size = DTypeSize(w.dtype);
  out.owned = Tensor::Zeros(DType::kU8, {w.rows * count * size});
  uint8_t* dst = out.owned.data<uint8_t>();
  for (int64_t r = 0; r < w.rows; ++r) {
    std::memcpy(dst + r * count * size, w.row_bytes(r) + begin * size,
                static_cast<size_t>(count * size));
  }
  out.data = dst;
  if (w.dtype == DType::kF8E4M3) {
    const int64_t c0 = begin / w.block_cols, sc = out.scale_cols(), rows = w.scale_rows();
    out.owned_scales = Tensor::Zeros(DType::kF32, {rows, sc});
    float* scales = out.owned_scales.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(scales + r * sc, w.scale_inv + r * w.scale_cols() + c0,
                  static_cast<size_t>(sc) * sizeof(float));
    }
    out.scale_inv = scales;
  }
  return out;
}

}  // namespace dserve::models
