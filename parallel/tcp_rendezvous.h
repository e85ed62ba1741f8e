// TcpRendezvous: how the nodes of a multi-node run agree on one secret before NCCL starts —
// node 0 listens on --dist-init-addr and hands its blob (NCCL's unique id) to each other node,
// which connects (retrying while node 0 comes up) and reads it. A small framed exchange with
// a magic word and the node's rank, so a stray connection is refused, not trusted.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::parallel {

struct HostPort {
  std::string host;
  int port = 0;
};
// "host:port" (host a name or an IPv4 address; port 1-65535); errors name --dist-init-addr.
absl::StatusOr<HostPort> ParseHostPort(const std::string& text);

// Node 0: accepts one connection from each of nodes 1..nnodes-1 and sends each the blob.
// Returns once all have it, or fails after `timeout` naming the nodes still missing.
absl::Status ServeRendezvous(const HostPort& at, int nnodes, const std::vector<uint8_t>& blob,
                             std::chrono::milliseconds timeout);
// Node `node_rank` (> 0): the blob of `bytes` bytes from node 0.
absl::StatusOr<std::vector<uint8_t>> JoinRendezvous(const HostPort& at, int node_rank,
                                                    size_t bytes,
                                                    std::chrono::milliseconds timeout);

}  // namespace dserve::parallel
