// Token sampling on the GPU: temperature (0 = greedy), top-k, top-p and min-p over a batch of
// logit rows, each row drawn with its own uniform by the CPU Sampler's rule (engine/sampler.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace dserve::kernels::cuda {

// One row's decoding knobs, as engine::SamplingParams holds them. Penalties and banned ids are
// not here: the engine samples rows that need them on the host.
struct SamplingRow {
  float temperature = 1.0f;  // 0: greedy (argmax, ties -> lowest id); < 0, NaN or inf: invalid
  int32_t top_k = 0;         // <= 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1: off
  float min_p = 0.0f;        // <= 0: off
  double uniform = 0.0;      // the row's draw in [0, 1) (SequenceRng::Uniform()); unused if greedy
};

struct SamplingParams {
  const float* logits = nullptr;  // [rows, vocab] F32, device
  int64_t rows = 0;
  int64_t vocab = 0;                    // in [1, INT32_MAX]
  const SamplingRow* params = nullptr;  // [rows], device
  void* workspace = nullptr;            // SamplingWorkspaceBytes(rows, vocab) bytes, device
  size_t workspace_bytes = 0;
  // [rows] I32 out, device: the token, or -1 when the row has nothing to sample (every logit
  // -inf or NaN), a +inf logit outside greedy, or an invalid temperature: the cases where the
  // CPU Sample() aborts.
  int32_t* tokens = nullptr;
};

// Device scratch for LaunchSampling: sorted copies of the drawing rows, 16 bytes a logit, for as
// many rows as one pass sorts (2^25 logits: 259 rows of DeepSeek-V3's vocabulary, so about
// 512 MiB for any larger batch). A pure function of the shape (no CUDA call); 0 for an empty or
// unsupported shape.
size_t SamplingWorkspaceBytes(int64_t rows, int64_t vocab);

// Enqueues the sampling of every row on `stream`. With the same logits, parameters and uniform,
// a row's token is the one engine::Sample() returns (empty penalties, no banned ids), except
// when u * total falls within float64 rounding of a boundary between two tokens, or a logit
// sits within one float of min_p's floor (CUDA's log and glibc's may differ there). Returns
// cudaErrorInvalidValue for a bad shape, a null pointer or a workspace that is too small;
// otherwise the launch's status.
cudaError_t LaunchSampling(const SamplingParams& p, cudaStream_t stream);

}  // namespace dserve::kernels::cuda
