// BlasLt: the backend's matrix products through cuBLASLt, owning its handle and workspace.
// Fp8BlockScaled is DeepSeek-V3's GEMM as cuBLASLt (CUDA >= 12.9) runs it on Hopper: E4M3
// activations with one F32 scale per 1x128 group (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F) times
// E4M3 weights with one per 128x128 block (..._BLK128x128_32F, the checkpoint's
// weight_scale_inv as published), FP32 accumulation, BF16 out; TN layout. Bf16 is the product
// for BF16 checkpoints; Fp8TensorScaled (one scale per tensor) measures the FP8 peak.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace dserve::kernels::cuda {

// out[m, n] = x[m, k] * w[n, k]^T, every matrix row-major and on the device.
struct GemmParams {
  int64_t m = 0;  // tokens
  int64_t n = 0;  // output features (rows of w)
  int64_t k = 0;  // input features
  const void* x = nullptr;  // [m, k]: E4M3 bytes (FP8 products) or BF16
  const void* w = nullptr;  // [n, k]: E4M3 bytes or BF16
  // Fp8BlockScaled: [k / 128][Fp8ScaleStride(m)] F32 as LaunchQuantizeFp8PerGroup writes them
  // (value = fp8 * scale). Fp8TensorScaled: one F32.
  const float* x_scales = nullptr;
  // Fp8BlockScaled: [ceil(n / 128), k / 128] F32 (weight_scale_inv as published).
  // Fp8TensorScaled: one F32.
  const float* w_scales = nullptr;
  void* out = nullptr;  // [m, n] BF16, or F32 with out_f32
  // Bf16 only: F32 products (the LM head's logits keep F32 precision, as the CPU's do).
  bool out_f32 = false;
};

// Not thread-safe: one workspace and algorithm cache; use one BlasLt per stream.
class BlasLt {
 public:
  static absl::StatusOr<std::unique_ptr<BlasLt>> Create(size_t workspace_bytes = size_t{32} << 20);
  ~BlasLt();
  BlasLt(const BlasLt&) = delete;
  BlasLt& operator=(const BlasLt&) = delete;

  absl::Status Fp8BlockScaled(const GemmParams& p, cudaStream_t stream);
  absl::Status Fp8TensorScaled(const GemmParams& p, cudaStream_t stream);
  absl::Status Bf16(const GemmParams& p, cudaStream_t stream);

 private:
  enum class Kind { kFp8Block, kFp8Tensor, kBf16 };
  BlasLt(cublasLtHandle_t handle, Tensor workspace);
  absl::Status Run(Kind kind, const GemmParams& p, cudaStream_t stream);

  cublasLtHandle_t handle_;
  Tensor workspace_;
  // The heuristic's choice per (kind, F32 out, m, n, k), so a shape pays for the search once.
  std::map<std::tuple<int, bool, int64_t, int64_t, int64_t>, cublasLtMatmulAlgo_t> algos_;
};

}  // namespace dserve::kernels::cuda
