#include "cli/rank_group.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"
#include "models/rank_calls.h"
#include "parallel/in_process_communicator.h"
#include "parallel/tcp_rendezvous.h"
#if DSERVE_HAS_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "parallel/nccl_communicator.h"
#endif

namespace dserve::cli {
namespace {

// How long nodes wait for each other at start-up (loading a checkpoint can take minutes).
constexpr std::chrono::minutes kRendezvousTimeout{15};
constexpr char kLoaded[] = "load its part of the model (its error is above)";

}  // namespace

std::vector<FlagSpec> ParallelFlags() {
  return {
      {"ep-size",
       "expert parallelism: every MoE layer's routed experts split over this many ranks (1, or "
       "the number of ranks)",
       "1"},
      {"tp-size",
       "tensor parallelism: attention heads, dense MLPs and shared experts split over this many "
       "ranks (1, or the number of ranks)",
       "1"},
      {"dp-attention",
       "with --ep-size N: each rank runs attention and the dense layers only for the sequences "
       "it owns (by their first KV page); MoE layers exchange tokens by all-to-all",
       "", true},
      {"nnodes", "cuda: nodes in the run, each with (ranks / nnodes) GPUs", "1"},
      {"node-rank", "cuda: this node's index (node 0 runs the server and the scheduler)", "0"},
      {"dist-init-addr",
       "cuda with --nnodes > 1: host:port on node 0 where the nodes meet to start NCCL", ""},
  };
}

absl::StatusOr<RankSetup> ParseRankSetup(const Flags& flags) {
  RankSetup s;
  DSERVE_ASSIGN_OR_RETURN(const int64_t ep, flags.GetInt("ep-size", 1, 1024));
  DSERVE_ASSIGN_OR_RETURN(const int64_t tp, flags.GetInt("tp-size", 1, 1024));
  DSERVE_ASSIGN_OR_RETURN(const int64_t nnodes, flags.GetInt("nnodes", 1, 1024));
  DSERVE_ASSIGN_OR_RETURN(const int64_t node_rank, flags.GetInt("node-rank", 0, 1023));
  DSERVE_ASSIGN_OR_RETURN(const int64_t threads, flags.GetInt("threads", 0, 1024));
  s.ep_size = static_cast<int>(ep);
  s.tp_size = static_cast<int>(tp);
  s.nnodes = static_cast<int>(nnodes);
  s.node_rank = static_cast<int>(node_rank);
  s.dist_init_addr = flags.Get("dist-init-addr");
  s.dp_attention = flags.GetBool("dp-attention");
  s.cuda = flags.Get("device") == "cuda";
  s.exact_gemm = flags.Get("cuda-gemm") == "exact";
  s.model_dir = flags.Get("model");
  s.threads = threads > 0 ? static_cast<int>(threads)
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int w = s.world();
  if ((s.ep_size != 1 && s.ep_size != w) || (s.tp_size != 1 && s.tp_size != w)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ep-size ", s.ep_size, " and --tp-size ", s.tp_size,
        " must each be 1 or the number of ranks (the larger of the two)"));
  }
  if (s.node_rank >= s.nnodes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--node-rank ", s.node_rank, " is not one of the ", s.nnodes, " nodes"));
  }
  if (!s.cuda && s.nnodes > 1) {
    return absl::InvalidArgumentError(
        "--nnodes > 1 needs --device cuda (on the CPU every rank is a thread of this process)");
  }
  if (w % s.nnodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", w, " ranks of --ep-size/--tp-size must split evenly over --nnodes ", s.nnodes));
  }
  if (s.nnodes > 1) {
    if (s.dist_init_addr.empty()) {
      return absl::InvalidArgumentError("--nnodes > 1 needs --dist-init-addr host:port (node 0)");
    }
    DSERVE_RETURN_IF_ERROR(parallel::ParseHostPort(s.dist_init_addr).status());
  }
  if (s.dp_attention && (s.ep_size != w || s.tp_size != 1 || w == 1)) {
    return absl::InvalidArgumentError(
        "--dp-attention needs --ep-size > 1 (the number of ranks) and --tp-size 1");
  }
  if (s.node_rank > 0 && !s.parallel()) {
    return absl::InvalidArgumentError("--node-rank > 0 needs --ep-size or --tp-size > 1");
  }
  return s;
}

RankGroup::RankGroup(const RankSetup& setup) : setup_(setup) {}

RankGroup::~RankGroup() { (void)Join(); }

absl::StatusOr<std::unique_ptr<RankGroup>> RankGroup::Start(
    const RankSetup& setup, std::unique_ptr<kernels::Ops>* leader_ops,
    models::ParallelConfig* leader_parallel) {
  std::unique_ptr<RankGroup> g(new RankGroup(setup));
  const int world = setup.world(), local = world / setup.nnodes;
  const int first = setup.node_rank * local;
  g->follower_status_.assign(static_cast<size_t>(world), absl::OkStatus());
  std::vector<std::pair<int, parallel::Communicator*>> followers;  // global rank, comm
  std::vector<std::unique_ptr<kernels::Ops>> ops(local);
  if (!setup.cuda) {
    g->in_process_ = std::make_unique<parallel::InProcessGroup>(world);
    const int per = std::max(1, setup.threads / world);
    for (int r = 0; r < world; ++r) ops[r] = std::make_unique<kernels::cpu::CpuOps>(per);
    g->leader_comm_ = &g->in_process_->rank(0);
    for (int r = 1; r < world; ++r) followers.push_back({r, &g->in_process_->rank(r)});
  } else {
#if DSERVE_HAS_CUDA
    // This node's GPUs first: a node that cannot use them never joins the rendezvous, and
    // node 0 then names it when the rendezvous times out.
    for (int i = 0; i < local; ++i) {
      kernels::cuda::CudaOpsOptions o;
      o.device = i;
      o.gemm = setup.exact_gemm ? kernels::cuda::GemmMode::kExact
                                : kernels::cuda::GemmMode::kTensorCores;
      auto cuda = kernels::cuda::CudaOps::Create(o);
      if (!cuda.ok()) {
        return absl::Status(cuda.status().code(),
                            absl::StrCat("GPU ", i, " of this node: ", cuda.status().message()));
      }
      ops[i] = std::move(cuda).value();
    }
    // NCCL's id: made on node 0 and handed to every other node before anyone starts NCCL.
    std::vector<uint8_t> id;
    if (setup.node_rank == 0) {
      DSERVE_ASSIGN_OR_RETURN(id, parallel::NewNcclId());
    }
    if (setup.nnodes > 1) {
      DSERVE_ASSIGN_OR_RETURN(const parallel::HostPort at,
                              parallel::ParseHostPort(setup.dist_init_addr));
      if (setup.node_rank == 0) {
        std::fprintf(stderr, "node 0: waiting for %d other node(s) on port %d\n",
                     setup.nnodes - 1, at.port);
        DSERVE_RETURN_IF_ERROR(
            parallel::ServeRendezvous(at, setup.nnodes, id, kRendezvousTimeout));
      } else {
        std::fprintf(stderr, "node %d: waiting for node 0 at %s\n", setup.node_rank,
                     setup.dist_init_addr.c_str());
        DSERVE_ASSIGN_OR_RETURN(id, parallel::JoinRendezvous(at, setup.node_rank, 128,
                                                             kRendezvousTimeout));
      }
    }
    // Every local rank joins NCCL at once (each call blocks until all ranks have).
    std::vector<absl::StatusOr<std::unique_ptr<parallel::NcclCommunicator>>> comms;
    for (int i = 0; i < local; ++i) comms.emplace_back(absl::UnknownError("not started"));
    std::vector<std::thread> joins;
    for (int i = 0; i < local; ++i) {
      joins.emplace_back([&, i] {
        auto* cuda = static_cast<kernels::cuda::CudaOps*>(ops[i].get());
        comms[i] = parallel::NcclCommunicator::Create(id, first + i, world, i, cuda->stream());
      });
    }
    for (std::thread& t : joins) t.join();
    for (int i = 0; i < local; ++i) {
      if (!comms[i].ok()) return comms[i].status();
      g->owned_comms_.push_back(std::move(comms[i]).value());
    }
    for (int i = 0; i < local; ++i) {
      if (first + i == 0) {
        g->leader_comm_ = g->owned_comms_[i].get();
      } else {
        followers.push_back({first + i, g->owned_comms_[i].get()});
      }
    }
#else
    return absl::InvalidArgumentError("this build has no CUDA backend");
#endif
  }
  for (const auto& [rank, comm] : followers) {
    const int index = rank - first;
    g->followers_.emplace_back(&RankGroup::RunFollower, g.get(), rank, std::move(ops[index]),
                               comm);
  }
  if (g->has_leader()) {
    *leader_ops = std::move(ops[0]);
    leader_parallel->ep_size = setup.ep_size;
    leader_parallel->tp_size = setup.tp_size;
    leader_parallel->dp_attention = setup.dp_attention;
    leader_parallel->comm = g->leader_comm_;
  }
  return g;
}

void RankGroup::RunFollower(int rank, std::unique_ptr<kernels::Ops> ops,
                            parallel::Communicator* comm) {
  models::ParallelConfig p;
  p.ep_size = setup_.ep_size;
  p.tp_size = setup_.tp_size;
  p.dp_attention = setup_.dp_attention;
  p.comm = comm;
  absl::StatusOr<std::unique_ptr<models::DeepseekModel>> model =
      models::DeepseekModel::Load(setup_.model_dir, *ops, false, p);
  if (!model.ok()) {
    std::fprintf(stderr, "dserve: rank %d: %s\n", rank,
                 std::string(model.status().message()).c_str());
  }
  absl::Status s = models::AgreeAllRanks(*ops, *comm, model.status(),
                                          absl::StatusCode::kFailedPrecondition, kLoaded);
  if (s.ok()) s = (*model)->Follow();
  if (!s.ok() && model.ok()) {
    std::fprintf(stderr, "dserve: rank %d: %s\n", rank, std::string(s.message()).c_str());
  }
  follower_status_[rank] = std::move(s);
}

absl::Status RankGroup::LeaderLoaded(kernels::Ops& ops, const absl::Status& loaded) {
  return models::AgreeAllRanks(ops, *leader_comm_, loaded, absl::StatusCode::kFailedPrecondition,
                               kLoaded);
}

absl::Status RankGroup::Join() {
  if (joined_) return absl::OkStatus();
  for (std::thread& t : followers_) t.join();
  joined_ = true;
  for (const absl::Status& s : follower_status_) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace dserve::cli
