#include "kernels/cuda/blas_lt.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"

namespace dserve::kernels::cuda {
namespace {

// Owners for cuBLASLt's descriptors.
struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~Desc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~Layout() {
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
};

template <typename T>
absl::Status SetDesc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v) {
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlasLt>> BlasLt::Create(size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  absl::StatusOr<Tensor> workspace =
      DeviceTensor(DType::kU8, {static_cast<int64_t>(workspace_bytes)});
  if (!workspace.ok()) {
    cublasLtDestroy(handle);
    return workspace.status();
  }
  return std::unique_ptr<BlasLt>(new BlasLt(handle, *std::move(workspace)));
}

BlasLt::BlasLt(cublasLtHandle_t handle, Tensor workspace)
    : handle_(handle), workspace_(std::move(workspace)) {}

BlasLt::~BlasLt() { cublasLtDestroy(handle_); }

absl::Status BlasLt::Fp8BlockScaled(const GemmParams& p, cudaStream_t stream) {
  return Run(Kind::kFp8Block, p, stream);
}
absl::Status BlasLt::Fp8TensorScaled(const GemmParams& p, cudaStream_t stream) {
  return Run(Kind::kFp8Tensor, p, stream);
}
absl::Status BlasLt::Bf16(const GemmParams& p, cudaStream_t stream) {
  return Run(Kind::kBf16, p, stream);
}

absl::Status BlasLt::Run(Kind kind, const GemmParams& p, cudaStream_t stream) {
  if (p.m < 1 || p.n < 1 || p.k < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM sizes must be positive, got m ", p.m, ", n ", p.n, ", k ", p.k));
  }
  if (!p.x || !p.w || !p.out) return absl::InvalidArgumentError("GEMM x, w and out are required");
  const bool fp8 = kind != Kind::kBf16;
  // FP8 tensor cores need 16-byte aligned rows; block scales need whole groups along k.
  if (fp8 && p.k % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 GEMM: k must be a multiple of 16, got ", p.k));
  }
  if (kind == Kind::kFp8Block && p.k % 512 != 0) {
    // k / 128 weight scales per row must be a multiple of 4: cuBLASLt reads the published
    // weight_scale_inv with that row stride (every DeepSeek-V3 projection has it).
    return absl::InvalidArgumentError(
        absl::StrCat("block-scaled FP8 GEMM: k must be a multiple of 512, got ", p.k));
  }
  if (kind == Kind::kFp8Block && p.m % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block-scaled FP8 GEMM: m must be a multiple of 4 (pad the activations), got ", p.m));
  }
  if (fp8 && p.n % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FP8 GEMM: n must be a multiple of 8 (16-byte BF16 output rows), got ", p.n));
  }
  if (fp8 && p.out_f32) return absl::InvalidArgumentError("FP8 GEMMs write BF16 here");
  if (fp8 && (!p.x_scales || !p.w_scales)) {
    return absl::InvalidArgumentError("FP8 GEMM: x_scales and w_scales are required");
  }
  // cuBLASLt is column-major: row-major w [n, k] is a k x n matrix (ld k) used transposed
  // (A, op T), row-major x [m, k] a k x m matrix (B, op N), and row-major out [m, n] the n x m
  // product D (ld n). So A's BLK128x128 scales, ceil(k/128) x ceil(n/128) column-major, are
  // weight_scale_inv [ceil(n/128), k/128] row-major as published (k/128 a multiple of 4), and
  // B's VEC128 scales, k/128 x m with m contiguous, are x_scales [k/128][Fp8ScaleStride(m)].
  const cudaDataType_t in_type = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  Desc desc;
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  DSERVE_RETURN_IF_ERROR(SetDesc(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T));
  DSERVE_RETURN_IF_ERROR(SetDesc(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N));
  if (fp8) {
    DSERVE_RETURN_IF_ERROR(SetDesc(desc.d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, p.w_scales));
    DSERVE_RETURN_IF_ERROR(SetDesc(desc.d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, p.x_scales));
  }
  if (kind == Kind::kFp8Block) {
    const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const int32_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    DSERVE_RETURN_IF_ERROR(SetDesc(desc.d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, a_mode));
    DSERVE_RETURN_IF_ERROR(SetDesc(desc.d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, b_mode));
  }
  Layout a, b, d;
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&a.d, in_type, p.k, p.n, p.k));
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&b.d, in_type, p.k, p.m, p.k));
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &d.d, p.out_f32 ? CUDA_R_32F : CUDA_R_16BF, p.n, p.m, p.n));

  const auto key = std::make_tuple(static_cast<int>(kind), p.out_f32, p.m, p.n, p.k);
  auto it = algos_.find(key);
  if (it == algos_.end()) {
    Preference pref;
    DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref.d));
    const size_t workspace_bytes = workspace_.bytes();
    DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
        sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t result = {};
    int found = 0;
    DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(
        handle_, desc.d, a.d, b.d, d.d, d.d, pref.d, 1, &result, &found));
    if (found == 0) {
      return absl::UnimplementedError(absl::StrCat(
          "cuBLASLt has no algorithm for this ", fp8 ? "FP8" : "BF16", " GEMM (m ", p.m, ", n ",
          p.n, ", k ", p.k, ") on this GPU; block-scaled FP8 needs CUDA >= 12.9 and sm_90"));
    }
    it = algos_.emplace(key, result.algo).first;
  }
  const float alpha = 1.0f, beta = 0.0f;
  DSERVE_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, desc.d, &alpha, p.w, a.d, p.x, b.d, &beta,
                                               p.out, d.d, p.out, d.d, &it->second,
                                               workspace_.raw(), workspace_.bytes(), stream));
  return absl::OkStatus();
}

}  // namespace dserve::kernels::cuda
