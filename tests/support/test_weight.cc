#include "tests/support/test_weight.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "tests/support/reference_checkpoint.h"

namespace dserve::testing {
namespace {

reference::FloatType ToFloatType(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3:
      return reference::FloatType::kF8E4M3;
    case DType::kBF16:
      return reference::FloatType::kBF16;
    case DType::kF16:
      return reference::FloatType::kF16;
    case DType::kF32:
      return reference::FloatType::kF32;
    default:
      throw std::invalid_argument("MakeTestWeight: unsupported dtype " +
                                  std::string(DTypeName(dtype)));
  }
}

}  // namespace

std::vector<kernels::cpu::Isa> SupportedIsas() {
  using kernels::cpu::Isa;
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (kernels::cpu::IsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

int64_t NumBlockScales(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols) {
  kernels::Weight w;
  w.rows = rows;
  w.cols = cols;
  w.block_rows = block_rows;
  w.block_cols = block_cols;
  return w.scale_rows() * w.scale_cols();
}

TestWeight MakeTestWeight(DType dtype, int64_t rows, int64_t cols, std::vector<uint8_t> bytes,
                          std::vector<float> scales, int64_t block_rows, int64_t block_cols) {
  const reference::FloatType type = ToFloatType(dtype);
  const bool fp8 = dtype == DType::kF8E4M3;
  if (static_cast<int64_t>(bytes.size()) != rows * cols * DTypeSize(dtype)) {
    throw std::invalid_argument("MakeTestWeight: " + std::to_string(bytes.size()) +
                                " bytes for a [" + std::to_string(rows) + ", " +
                                std::to_string(cols) + "] weight");
  }
  const int64_t num_scales = fp8 ? NumBlockScales(rows, cols, block_rows, block_cols) : 0;
  if (static_cast<int64_t>(scales.size()) != num_scales) {
    throw std::invalid_argument("MakeTestWeight: " + std::to_string(scales.size()) +
                                " scales, want " + std::to_string(num_scales));
  }
  TestWeight t;
  t.bytes = std::move(bytes);
  t.scales = std::move(scales);
  t.w.dtype = dtype;
  t.w.rows = rows;
  t.w.cols = cols;
  t.w.block_rows = block_rows;
  t.w.block_cols = block_cols;
  t.w.data = t.bytes.data();
  if (fp8) t.w.scale_inv = t.scales.data();
  t.real.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double v = reference::DecodeElement(type, t.bytes.data(), r * cols + c);
      if (fp8) v *= t.scales[(r / block_rows) * t.w.scale_cols() + c / block_cols];
      t.real[r * cols + c] = v;
    }
  }
  return t;
}

TestWeight MakeF32TestWeight(int64_t rows, int64_t cols, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return MakeTestWeight(DType::kF32, rows, cols, std::move(bytes));
}

}  // namespace dserve::testing
