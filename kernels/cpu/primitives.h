// The inner loops of the CPU backend, compiled once per ISA (primitives_{scalar,avx2,avx512}.cc
// include primitives_impl.inc with different compiler flags) and picked at run time.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/weight.h"

namespace dserve::kernels::cpu {

// Rows per group of a packed weight (Weight::packed).
constexpr int64_t kPackRows = 16;

struct Primitives {
  Isa isa;
  // Rows per call of gemm_rows (the packed panel height).
  int64_t panel_rows;
  // y[t * ldy + (r - row_begin)] = dot(x[t * ldx .. + cols], W[r]) for t < T, r in the range;
  // reads W in its stored dtype (for small T: decode-time matrix-vector products).
  void (*gemv_rows)(const Weight& w, int64_t row_begin, int64_t row_end, const float* x,
                    int64_t ldx, int64_t T, float* y, int64_t ldy);
  // The same for many tokens and at most panel_rows rows: decodes the rows once, then runs
  // register-tiled products over all T tokens (prefill-time matrix products). Bit-identical
  // to gemv_rows for every token, so results never depend on the batch a token is in.
  void (*gemm_rows)(const Weight& w, int64_t row_begin, int64_t row_end, const float* x,
                    int64_t ldx, int64_t T, float* y, int64_t ldy);
  // dst[(r - row_begin) * w.cols + c] = W[r][c] as F32, scales applied.
  void (*decode_rows)(const Weight& w, int64_t row_begin, int64_t row_end, float* dst);
  // Tokens per tile of packed_rows' activation layout (see TileTokens).
  int64_t pack_tokens;
  // gemv_rows/gemm_rows for a packed weight (w.packed, rows a multiple of 16, row_begin too),
  // the T tokens' activations given as TileTokens lays them out: each output a plain
  // sequential sum over k, the same for any number of tokens.
  void (*packed_rows)(const Weight& w, int64_t row_begin, int64_t row_end, const float* xt,
                      int64_t T, float* y, int64_t ldy);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y += a * x
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // x[i] = exp(x[i] - shift) (0 where x[i] is -inf); returns the sum. Softmax's inner loop.
  float (*exp_shifted)(float* x, int64_t n, float shift);
  // max over x[0, n) (-inf for n == 0); softmax's row maximum.
  float (*max_value)(const float* x, int64_t n);
};

const Primitives& GetPrimitives(Isa isa);

// packed_rows' activation layout: tokens in tiles of `tile` (the last may be shorter), tile j
// at xt + j * tile * K holding its n tokens column-major ([K][n]), so that one column's
// activations for the whole tile are adjacent and addressed from one pointer. One token's
// layout is its own row.
inline void TileTokens(const float* x, int64_t ldx, int64_t T, int64_t K, int64_t tile,
                       float* xt) {
  for (int64_t t0 = 0; t0 < T; t0 += tile) {
    const int64_t n = T - t0 < tile ? T - t0 : tile;
    float* out = xt + t0 * K;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t t = 0; t < n; ++t) out[k * n + t] = x[(t0 + t) * ldx + k];
    }
  }
}

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
