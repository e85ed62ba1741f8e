#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace dserve::kernels::cpu {
namespace {

// Up to this many tokens, matrix products read the weights directly (decode steps).
constexpr int64_t kGemvMaxTokens = 4;

void CheckF32Matrix(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DSERVE_CHECK(t.dtype() == DType::kF32 && t.rank() == 2 && t.dim(0) == rows &&
               t.dim(1) == cols)
      << what << " is " << t.ShapeString() << ", expected F32 [" << rows << ", " << cols << "]";
}

}  // namespace

CpuOps::CpuOps(int num_threads, Isa isa) : pool_(num_threads), prims_(GetPrimitives(isa)) {}

Tensor CpuOps::Empty(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return Tensor(AllocateHost(static_cast<size_t>(n) * DTypeSize(dtype)), dtype, std::move(shape));
}

void CpuOps::Embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) {
  const int64_t T = static_cast<int64_t>(ids.size());
  CheckF32Matrix(out, T, table.cols, "embedding output");
  float* y = out.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    DSERVE_CHECK(ids[t] >= 0 && ids[t] < table.rows) << "token id " << ids[t];
    prims_.decode_rows(table, ids[t], ids[t] + 1, y + t * table.cols);
  }
}

void CpuOps::RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t T = x.dim(0), D = x.dim(1);
  CheckF32Matrix(out, T, D, "rmsnorm output");
  DSERVE_CHECK(weight.numel() == D) << "rmsnorm weight " << weight.ShapeString();
  const float* w = weight.data<float>();
  pool_.ParallelFor(T, GrainFor(D), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* in = x.data<float>() + t * D;
      float* o = out.data<float>() + t * D;
      const float inv = 1.0f / std::sqrt(prims_.dot(in, in, D) / D + eps);
      for (int64_t i = 0; i < D; ++i) o[i] = in[i] * inv * w[i];
    }
  });
}

void CpuOps::AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out) {
  Add(residual, delta);
  RmsNorm(residual, weight, eps, out);
}

void CpuOps::PrepareWeight(Weight& w) {
  // Worth it for large BF16/F32 matrices (the LM head): no horizontal sums, and many tokens
  // run at the FMA units' rate. FP8 weights keep their layout.
  if ((w.dtype != DType::kBF16 && w.dtype != DType::kF32) || w.rows % kPackRows != 0 ||
      !w.packed.empty()) {
    return;
  }
  const int64_t R = w.rows, K = w.cols;
  Tensor packed = Empty(w.dtype, {R, K});
  auto pack = [&](auto* dst) {
    using T = std::remove_pointer_t<decltype(dst)>;
    const T* src = static_cast<const T*>(w.data);
    pool_.ParallelFor(R / kPackRows, 1, [&](int64_t b, int64_t e) {
      for (int64_t g = b; g < e; ++g) {
        T* out = dst + g * K * kPackRows;
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t i = 0; i < kPackRows; ++i) {
            out[k * kPackRows + i] = src[(g * kPackRows + i) * K + k];
          }
        }
      }
    });
  };
  if (w.dtype == DType::kBF16) {
    pack(packed.data<uint16_t>());
  } else {
    pack(packed.data<float>());
  }
  w.packed = std::move(packed);
}

void CpuOps::LinearRaw(const float* x, int64_t T, const Weight& w, float* y, bool parallel) {
  const int64_t K = w.cols, N = w.rows;
  // The same row ranges' arithmetic either way: only who runs them changes.
  auto loop = [&](int64_t n, int64_t grain, auto&& fn) {
    if (parallel) {
      pool_.ParallelFor(n, grain, [&fn](int64_t b, int64_t e) { fn(b, e); });
    } else if (n > 0) {
      fn(int64_t{0}, n);
    }
  };
  if (!w.packed.empty()) {
    // Laid out once here rather than in every chunk of rows (thread-local: MoE experts call
    // this from several threads at once).
    thread_local std::vector<float> tiled;
    const float* xt = x;
    if (T > 1) {
      tiled.resize(static_cast<size_t>(T * K));
      TileTokens(x, K, T, K, prims_.pack_tokens, tiled.data());
      xt = tiled.data();
    }
    constexpr int64_t kPanel = 2 * kPackRows;
    loop((N + kPanel - 1) / kPanel, GrainFor(kPanel * K * T), [&](int64_t b, int64_t e) {
      const int64_t r0 = b * kPanel, r1 = std::min(N, e * kPanel);
      prims_.packed_rows(w, r0, r1, xt, T, y + r0, N);
    });
    return;
  }
  if (T <= kGemvMaxTokens) {
    loop(N, GrainFor(K * T), [&](int64_t b, int64_t e) {
      prims_.gemv_rows(w, b, e, x, K, T, y + b, N);
    });
    return;
  }
  const int64_t rows = prims_.panel_rows;
  const int64_t panels = (N + rows - 1) / rows;
  loop(panels, GrainFor(rows * K * T), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t r0 = p * rows, r1 = std::min(N, r0 + rows);
      prims_.gemm_rows(w, r0, r1, x, K, T, y + r0, N);
    }
  });
}

void CpuOps::Linear(const Tensor& x, const Weight& w, Tensor& out) {
  const int64_t T = x.dim(0);
  CheckF32Matrix(x, T, w.cols, "linear input");
  CheckF32Matrix(out, T, w.rows, "linear output");
  LinearRaw(x.data<float>(), T, w, out.data<float>());
}

void CpuOps::SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) {
  const int64_t n = gate.numel();
  DSERVE_CHECK(up.numel() == n && out.numel() == n) << "silu_mul sizes";
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  pool_.ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = SiluTimes(g[i], u[i]);
  });
}

void CpuOps::Add(Tensor& x, const Tensor& y) {
  const int64_t n = x.numel();
  DSERVE_CHECK(y.numel() == n) << "add " << x.ShapeString() << " + " << y.ShapeString();
  float* a = x.data<float>();
  const float* b = y.data<float>();
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

void CpuOps::AddWeightedRows(const Tensor& rows, std::span<const int32_t> targets,
                             std::span<const float> weights, Tensor& out) {
  const int64_t n = static_cast<int64_t>(targets.size()), width = out.dim(1);
  CheckF32Matrix(rows, n, width, "rows to add");
  DSERVE_CHECK(weights.size() == targets.size()) << "a weight per row";
  for (int64_t i = 0; i < n; ++i) {
    DSERVE_CHECK(targets[i] >= 0 && targets[i] < out.dim(0))
        << "target row " << targets[i] << " of " << out.dim(0);
    // The MoE op's own add (cpu_moe.cc), so the combine's bits match it.
    prims_.axpy(weights[i], rows.data<float>() + i * width, out.data<float>() + targets[i] * width,
                width);
  }
}

void CpuOps::ConcatColumns(const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t T = a.dim(0), A = a.dim(1), B = b.dim(1);
  CheckF32Matrix(out, T, A + B, "concat output");
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(out.data<float>() + t * (A + B), a.data<float>() + t * A, A * sizeof(float));
    std::memcpy(out.data<float>() + t * (A + B) + A, b.data<float>() + t * B, B * sizeof(float));
  }
}

void CpuOps::SetZero(Tensor& t) {
  if (t.bytes() > 0) std::memset(t.raw(), 0, t.bytes());
}

void CpuOps::GatherRows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  const int64_t n = static_cast<int64_t>(rows.size()), width = x.dim(1);
  CheckF32Matrix(out, n, width, "gathered rows");
  for (int64_t i = 0; i < n; ++i) {
    DSERVE_CHECK(rows[i] >= 0 && rows[i] < x.dim(0)) << "row " << rows[i] << " of " << x.dim(0);
    std::memcpy(out.data<float>() + i * width, x.data<float>() + rows[i] * width,
                width * sizeof(float));
  }
}

void CpuOps::CopyToHost(const Tensor& src, void* dst) {
  if (dst != src.raw()) std::memcpy(dst, src.raw(), src.bytes());
}

void ApplyRope(const float* in, float* out, const float* cos, const float* sin,
               int64_t rope_dim) {
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float a = in[2 * i], b = in[2 * i + 1];
    out[2 * i] = a * cos[i] - b * sin[i];
    out[2 * i + 1] = b * cos[i] + a * sin[i];
  }
}

}  // namespace dserve::kernels::cpu
