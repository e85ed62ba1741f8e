// RankGroup: the ranks of a parallel model that live in this process. --ep-size / --tp-size N
// make N ranks: on the CPU, N threads of this process (in-process communicator); with
// --device cuda, one per GPU over --nnodes nodes (N / nnodes GPUs each, NCCL, its id handed out
// by node 0 over --dist-init-addr). Global rank 0 — node 0's first — is the leader the command
// drives; every other rank loads its part of the checkpoint and follows it
// (DeepseekModel::Follow). All ranks report their load before any step, so a rank that could
// not load fails every rank instead of leaving them waiting.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/flags.h"
#include "kernels/ops.h"
#include "models/parallel_config.h"
#include "parallel/communicator.h"

namespace dserve::parallel {
class InProcessGroup;
}

namespace dserve::cli {

// --ep-size, --tp-size, --dp-attention, --nnodes, --node-rank, --dist-init-addr.
std::vector<FlagSpec> ParallelFlags();

struct RankSetup {
  int ep_size = 1, tp_size = 1, nnodes = 1, node_rank = 0;
  bool dp_attention = false;
  std::string dist_init_addr;
  bool cuda = false;
  int threads = 1;  // CPU threads for all ranks together
  std::string model_dir;
  bool exact_gemm = false;  // --cuda-gemm exact
  int world() const { return std::max(ep_size, tp_size); }
  bool parallel() const { return world() > 1; }
};
absl::StatusOr<RankSetup> ParseRankSetup(const Flags& flags);

class RankGroup {
 public:
  // Starts this process's followers (threads). On node 0, *leader_ops gets the leader's backend
  // and *leader_parallel its ParallelConfig (its communicator lives in the group).
  static absl::StatusOr<std::unique_ptr<RankGroup>> Start(
      const RankSetup& setup, std::unique_ptr<kernels::Ops>* leader_ops,
      models::ParallelConfig* leader_parallel);
  ~RankGroup();

  bool has_leader() const { return setup_.node_rank == 0; }
  // The leader's part of the load check: every rank says whether it loaded; an error if any
  // did not (the followers then stop too).
  absl::Status LeaderLoaded(kernels::Ops& ops, const absl::Status& loaded);
  // Waits for this process's followers (after the leader's StopFollowers, or on a follower
  // node until node 0 stops); their first error.
  absl::Status Join();

 private:
  explicit RankGroup(const RankSetup& setup);
  void RunFollower(int global_rank, std::unique_ptr<kernels::Ops> ops,
                   parallel::Communicator* comm);

  RankSetup setup_;
  std::unique_ptr<parallel::InProcessGroup> in_process_;
  std::vector<std::unique_ptr<parallel::Communicator>> owned_comms_;  // NCCL
  parallel::Communicator* leader_comm_ = nullptr;
  std::vector<std::thread> followers_;
  std::vector<absl::Status> follower_status_;
  bool joined_ = false;
};

}  // namespace dserve::cli
