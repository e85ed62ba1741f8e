// Communicator: the collectives that tie the ranks of a parallel model together (expert
// parallelism's dispatch and combine, tensor parallelism's sums, the step's batch from rank 0).
// Two implementations: InProcessGroup's ranks (threads sharing memory; every parallel path runs
// on the CPU in tests) and NcclCommunicator (one rank per GPU, across nodes).
//
// Every rank of a group calls the same collectives in the same order with matching sizes.
// Buffers live where the rank's backend keeps its tensors (host memory on the CPU, the rank's
// GPU for NCCL); send and receive buffers must not overlap unless stated. A collective returns
// once this rank's outputs are ready to read (for NCCL: on the rank's stream, in order).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace dserve::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data[i] = the sum over ranks, in rank order, of each rank's data[i] (F32, in place): every
  // rank gets the same bits.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
  // recv [size * bytes] = every rank's `bytes` of send, in rank order.
  virtual absl::Status AllGather(const void* send, int64_t bytes, void* recv) = 0;
  // Rank r sends send_bytes[p] bytes (from send, packed in peer order) to each peer p, and
  // receives recv_bytes[p] bytes from each (into recv, packed in peer order). recv_bytes[p]
  // must equal what peer p sends here (exchange the sizes first, say with AllGather).
  virtual absl::Status AllToAllV(const void* send, std::span<const int64_t> send_bytes,
                                 void* recv, std::span<const int64_t> recv_bytes) = 0;
  // `bytes` of root's data to every rank's data.
  virtual absl::Status Broadcast(void* data, int64_t bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

}  // namespace dserve::parallel
