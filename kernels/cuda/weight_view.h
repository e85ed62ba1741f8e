// WeightView: a projection matrix on the device as kernels see it — a plain struct (no absl,
// no core types) that .cu files take by value: its dtype, shape, data and, for FP8, the
// 128x128 block scales (weight_scale_inv as published). weight_view.cuh reads elements.
#pragma once

#include <cstdint>

namespace dserve::kernels::cuda {

enum class WeightType : int { kF32, kBF16, kF16, kFp8E4M3 };

struct WeightView {
  WeightType type = WeightType::kF32;
  int64_t rows = 0;            // output features
  int64_t cols = 0;            // input features
  const void* data = nullptr;  // row-major [rows, cols] on the device
  // FP8 only: [ceil(rows / block_rows), ceil(cols / block_cols)] F32 on the device; element
  // (r, c) is fp8(r, c) * scale_inv[r / block_rows][c / block_cols].
  const float* scale_inv = nullptr;
  int64_t block_rows = 128;
  int64_t block_cols = 128;
};

}  // namespace dserve::kernels::cuda
