// What the CPU kernel tests share: the instruction sets to run, and kernels::Weight values over
// storage the test owns, with the real value of every element in double. Each test draws its
// own element codes and scales (chosen for its conditioning); the real values are decoded here
// exactly, by the reference model's decoders (reference_checkpoint.h).
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/isa.h"
#include "kernels/weight.h"

namespace dserve::testing {

// The instruction sets this CPU runs, in the order scalar, AVX2, AVX-512.
std::vector<kernels::cpu::Isa> SupportedIsas();

// A weight, the storage it views, and its real values. Move-only: w.data and w.scale_inv
// point into bytes and scales, whose buffers a move carries along but a copy would not.
struct TestWeight {
  TestWeight() = default;
  TestWeight(TestWeight&&) = default;
  TestWeight& operator=(TestWeight&&) = default;
  TestWeight(const TestWeight&) = delete;
  TestWeight& operator=(const TestWeight&) = delete;

  kernels::Weight w;
  std::vector<uint8_t> bytes;  // [rows, cols] elements of w.dtype, little-endian
  std::vector<float> scales;   // FP8 only: [scale_rows, scale_cols], what w.scale_inv views
  std::vector<double> real;    // [rows, cols]: each element decoded, times its block scale
};

// How many block scales an FP8 weight [rows, cols] has.
int64_t NumBlockScales(int64_t rows, int64_t cols, int64_t block_rows = 128,
                       int64_t block_cols = 128);

// A TestWeight over `bytes`: the row-major elements of a [rows, cols] weight in `dtype`
// (FP8 E4M3, BF16, F16 or F32) and, for FP8 only, its NumBlockScales() `scales`. The block
// sizes are set on the weight whatever the dtype. Throws std::invalid_argument for another
// dtype or sizes that do not match.
TestWeight MakeTestWeight(DType dtype, int64_t rows, int64_t cols, std::vector<uint8_t> bytes,
                          std::vector<float> scales = {}, int64_t block_rows = 128,
                          int64_t block_cols = 128);

// An F32 TestWeight [rows, cols] holding `values`.
TestWeight MakeF32TestWeight(int64_t rows, int64_t cols, const std::vector<float>& values);

}  // namespace dserve::testing
