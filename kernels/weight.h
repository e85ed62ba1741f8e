// Weight: a 2-D projection matrix [rows = out features, cols = in features] kept in the dtype
// the checkpoint stores (FP8 E4M3 with 128x128 block scales, BF16, F16 or F32); kernels
// dequantise on the fly and never expand it.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/tensor.h"

namespace dserve::kernels {

struct Weight {
  DType dtype = DType::kF32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  const void* data = nullptr;  // row-major [rows, cols], on the backend's device
  // FP8 only: weight_scale_inv [ceil(rows / block_rows), ceil(cols / block_cols)], F32;
  // the real value of element (r, c) is fp8(r, c) * scale_inv[r / block_rows][c / block_cols].
  const float* scale_inv = nullptr;
  int64_t block_rows = 128;
  int64_t block_cols = 128;
  // Storage this view keeps alive where the loader had to copy (e.g. unaligned data).
  Tensor owned;
  Tensor owned_scales;
  // Optional copy in a backend's own layout, made once at load by Ops::PrepareWeight (the CPU
  // backend: BF16/F32 rows in groups of kPackRows, [rows / 16][cols][16], so one vector
  // load reads 16 rows at one column and products need no horizontal sums).
  Tensor packed;

  bool empty() const { return data == nullptr; }
  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  int64_t scale_rows() const { return (rows + block_rows - 1) / block_rows; }
  const uint8_t* row_bytes(int64_t r) const {
    return static_cast<const uint8_t*>(data) + r * cols * DTypeSize(dtype);
  }
};

}  // namespace dserve::kernels
