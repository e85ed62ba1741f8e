// The inner loops of the CPU backend, compiled once per ISA (primitives_{scalar,avx2,avx512}.cc
// include primitives_impl.inc with different compiler flags) and picked at run time.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/weight.h"

namespace dserve::kernels::cpu {

struct Primitives {
  Isa isa;
  // y[t * ldy + (r - row_begin)] = dot(x[t * ldx .. + cols], W[r]) for t < T, r in the range;
  // reads W in its stored dtype (for small T: decode-time matrix-vector products).
  void (*gemv_rows)(const Weight& w, int64_t row_begin, int64_t row_end, const float* x,
                    int64_t ldx, int64_t T, float* y, int64_t ldy);
  // dst[(r - row_begin) * w.cols + c] = W[r][c] as F32, scales applied.
  void (*decode_rows)(const Weight& w, int64_t row_begin, int64_t row_end, float* dst);
  // y[t * ldy + r] = dot(x[t * ldx ..], panel[r * K ..]) for t < T, r < rows (F32 tiles).
  void (*gemm_panel)(const float* x, int64_t ldx, int64_t T, const float* panel, int64_t rows,
                     int64_t K, float* y, int64_t ldy);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y += a * x
  void (*axpy)(float a, const float* x, float* y, int64_t n);
};

const Primitives& GetPrimitives(Isa isa);

namespace scalar {
extern const Primitives kPrimitives;
}
namespace avx2 {
extern const Primitives kPrimitives;
}
namespace avx512 {
extern const Primitives kPrimitives;
}

}  // namespace dserve::kernels::cpu
