// NcclCommunicator: a Communicator over NCCL, one rank per GPU, across nodes through NCCL's own
// transports. Every collective is enqueued on the rank's CUDA stream (the CudaOps stream its
// model runs on), so it is ordered after the kernels that produce its inputs and before those
// that read its outputs; nothing waits on the host except Barrier. Sums are NCCL's (the same
// bits on every rank; the order is NCCL's, not rank order).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <cuda_runtime_api.h>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace dserve::parallel {

// NCCL's unique id for a new group (rank 0 makes it and hands it to the others).
absl::StatusOr<std::vector<uint8_t>> NewNcclId();

class NcclCommunicator final : public Communicator {
 public:
  // Joins the group named by `id` as `rank` of `size` on CUDA device `device`; blocks until
  // every rank has joined (call it from one thread per local rank). `stream`: the rank's.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const std::vector<uint8_t>& id,
                                                                  int rank, int size, int device,
                                                                  cudaStream_t stream);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, int64_t count) override;
  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override;
  absl::Status AllToAllV(const void* send, std::span<const int64_t> send_bytes, void* recv,
                         std::span<const int64_t> recv_bytes) override;
  absl::Status Broadcast(void* data, int64_t bytes, int root) override;
  absl::Status Barrier() override;

 private:
  struct Impl;
  NcclCommunicator(std::unique_ptr<Impl> impl, int rank, int size);
  std::unique_ptr<Impl> impl_;
  int rank_, size_;
};

}  // namespace dserve::parallel
