#include "kernels/cuda/row_moves.h"

namespace dserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One block per output row.
__global__ void GatherRowsKernel(const float* x, int64_t width, const int32_t* rows, float* out) {
  const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * width;
  float* dst = out + static_cast<int64_t>(blockIdx.x) * width;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) dst[c] = src[c];
}

__global__ void ConcatColumnsKernel(const float* a, int64_t a_cols, const float* b,
                                    int64_t b_cols, float* out) {
  const int64_t t = blockIdx.x, width = a_cols + b_cols;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    out[t * width + c] = c < a_cols ? a[t * a_cols + c] : b[t * b_cols + c - a_cols];
  }
}

__global__ void ScatterAddScaledKernel(const float* y, int64_t width, const int32_t* rows,
                                       const float* scales, float* out) {
  const float* src = y + static_cast<int64_t>(blockIdx.x) * width;
  float* dst = out + static_cast<int64_t>(rows[blockIdx.x]) * width;
  const float s = scales[blockIdx.x];
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) dst[c] += s * src[c];
}

bool BadRows(int64_t n) { return n < 0 || n > 0x7fffffff; }

}  // namespace

cudaError_t LaunchGatherRows(const float* x, int64_t width, const int32_t* rows, int64_t n,
                             float* out, cudaStream_t stream) {
  if (BadRows(n) || width < 1) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (!x || !rows || !out) return cudaErrorInvalidValue;
  GatherRowsKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, width, rows, out);
  return cudaGetLastError();
}

cudaError_t LaunchConcatColumns(const float* a, int64_t a_cols, const float* b, int64_t b_cols,
                                int64_t rows, float* out, cudaStream_t stream) {
  if (BadRows(rows) || a_cols < 0 || b_cols < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!a || !b || !out) return cudaErrorInvalidValue;
  ConcatColumnsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(a, a_cols, b, b_cols,
                                                                           out);
  return cudaGetLastError();
}

cudaError_t LaunchScatterAddScaled(const float* y, int64_t width, const int32_t* rows,
                                   const float* scales, int64_t n, float* out,
                                   cudaStream_t stream) {
  if (BadRows(n) || width < 1) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (!y || !rows || !scales || !out) return cudaErrorInvalidValue;
  ScatterAddScaledKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(y, width, rows,
                                                                           scales, out);
  return cudaGetLastError();
}

}  // namespace dserve::kernels::cuda
