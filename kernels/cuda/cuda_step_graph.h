// CudaStepGraph: one recorded step of CudaOps (an instantiated CUDA graph) with its input
// buffer: a pinned host image of the step's metadata and its device copy, which the recorded
// kernels read. CudaOps builds and replays it (cuda_graphs.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_ops.h"

namespace dserve::kernels::cuda {

class CudaStepGraph final : public StepGraph {
 public:
  explicit CudaStepGraph(CudaOps& ops) : ops_(ops) {}
  ~CudaStepGraph() override;
  CudaStepGraph(const CudaStepGraph&) = delete;
  CudaStepGraph& operator=(const CudaStepGraph&) = delete;

  absl::Status Replay(const StepGraphInput& in) override { return ops_.ReplayStepGraph(*this, in); }

 private:
  friend class CudaOps;

  CudaOps& ops_;
  cudaGraphExec_t exec_ = nullptr;
  cudaEvent_t inputs_copied_ = nullptr;  // the pinned image may be rewritten after this
  uint8_t* pinned_ = nullptr;           // host image of the inputs (cudaMallocHost)
  size_t input_bytes_ = 0;              // the whole buffer: tables last, at full capacity
  Tensor device_inputs_;
  CudaOps::InputRegion ids_, logit_rows_, positions_, offsets_, rows_, live_rows_, tables_,
      plans_[2];
  std::shared_ptr<void> arena_;  // the activations' arena: alive while this graph is
  // The recorded shape, which every replay must have.
  std::vector<int64_t> slice_rows_;
  int64_t logit_row_count_ = 0;
  int num_heads_ = 0;
  const void* cache_storage_ = nullptr;
  int64_t rope_positions_ = 0;  // positions the recorded RoPE table covers
  MlaDecodeSchedule schedules_[2];
};

}  // namespace dserve::kernels::cuda
