#include "cli/model_session.h"

#include <algorithm>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#if DSERVE_HAS_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace dserve::cli {

std::vector<FlagSpec> ModelFlags() {
  std::vector<FlagSpec> flags = {
      {"model", "checkpoint folder (Hugging Face layout)", "", false, true},
      {"device",
#if DSERVE_HAS_CUDA
       "cpu|cuda: the backend (cuda: GPU 0, or GPUs 0..N-1 for N ranks on this node; "
       "CUDA_VISIBLE_DEVICES picks them)",
#else
       "cpu (this build has no CUDA backend: build where nvcc is found)",
#endif
       "cpu"},
      {"cuda-gemm",
       "tensor-cores|exact: how --device cuda multiplies FP8/BF16 weights (tensor-cores: FP8 "
       "activations as DeepSeek serves; exact: F32 like the CPU backend, slower)",
       "tensor-cores"},
      {"threads", "CPU threads (0: one per core)", "0"},
      {"mla-mode", "auto|naive|absorbed: which MLA form attention uses", "auto"},
  };
  std::vector<FlagSpec> parallel = ParallelFlags();
  flags.insert(flags.end(), parallel.begin(), parallel.end());
  return flags;
}

ModelSession::~ModelSession() {
  if (model && ranks) {
    const absl::Status s = model->StopFollowers();
    if (!s.ok()) {
      std::fprintf(stderr, "dserve: stopping the other ranks: %s\n",
                   std::string(s.message()).c_str());
    }
  }
  model.reset();  // before the backend and the group it talks to
  ops.reset();
}

absl::Status FollowOnly(const std::string& command, ModelSession& session) {
  std::fprintf(stderr, "dserve %s: this node's ranks follow node 0 until it stops\n",
               command.c_str());
  return session.ranks->Join();
}

absl::StatusOr<ModelSession> OpenModel(const Flags& flags) {
  const std::string device = flags.Get("device");
  if (device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu or cuda, got '", device, "'"));
  }
#if !DSERVE_HAS_CUDA
  if (device == "cuda") {
    return absl::InvalidArgumentError(
        "--device cuda is not available: this build has no CUDA backend (configure with "
        "nvcc on the PATH, or -DDSERVE_CUDA=ON)");
  }
#endif
  const std::string gemm = flags.Get("cuda-gemm");
  if (gemm != "tensor-cores" && gemm != "exact") {
    return absl::InvalidArgumentError(
        absl::StrCat("--cuda-gemm must be tensor-cores or exact, got '", gemm, "'"));
  }
  DSERVE_ASSIGN_OR_RETURN(int64_t threads, flags.GetInt("threads", 0, 1024));
  ModelSession s;
  const std::string mode = flags.Get("mla-mode");
  if (mode == "naive") {
    s.mla_mode = kernels::MlaMode::kNaive;
  } else if (mode == "absorbed") {
    s.mla_mode = kernels::MlaMode::kAbsorbed;
  } else if (mode != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--mla-mode must be auto, naive or absorbed, got '", mode, "'"));
  }
  DSERVE_ASSIGN_OR_RETURN(const RankSetup setup, ParseRankSetup(flags));
  if (setup.parallel()) {
    models::ParallelConfig parallel;
    DSERVE_ASSIGN_OR_RETURN(s.ranks, RankGroup::Start(setup, &s.ops, &parallel));
    if (!s.ranks->has_leader()) return s;
    s.cpu = dynamic_cast<kernels::cpu::CpuOps*>(s.ops.get());
    s.threads = s.cpu ? s.cpu->num_threads() : setup.threads;
    std::fprintf(stderr, "%d ranks (%s)\n", setup.world(), parallel.Describe().c_str());
    absl::StatusOr<std::unique_ptr<models::DeepseekModel>> model =
        models::DeepseekModel::Load(flags.Get("model"), *s.ops, true, parallel);
    DSERVE_RETURN_IF_ERROR(s.ranks->LeaderLoaded(*s.ops, model.status()));
    s.model = std::move(model).value();
    return s;
  }
  if (device == "cpu") {
    auto cpu = std::make_unique<kernels::cpu::CpuOps>(static_cast<int>(threads));
    s.cpu = cpu.get();
    s.threads = cpu->num_threads();
    s.ops = std::move(cpu);
  } else {
#if DSERVE_HAS_CUDA
    kernels::cuda::CudaOpsOptions options;
    options.gemm = gemm == "exact" ? kernels::cuda::GemmMode::kExact
                                   : kernels::cuda::GemmMode::kTensorCores;
    auto cuda = kernels::cuda::CudaOps::Create(options);
    if (!cuda.ok()) {
      return absl::Status(cuda.status().code(),
                          absl::StrCat("--device cuda: ", cuda.status().message()));
    }
    s.ops = std::move(cuda).value();
    s.threads = threads > 0 ? static_cast<int>(threads)
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
  }
  DSERVE_ASSIGN_OR_RETURN(s.model, models::DeepseekModel::Load(flags.Get("model"), *s.ops));
  return s;
}

int ReportError(const std::string& command, const absl::Status& status) {
  std::fprintf(stderr, "dserve %s: %s\n", command.c_str(), std::string(status.message()).c_str());
  return absl::IsInvalidArgument(status) || absl::IsNotFound(status) ? 2 : 1;
}

bool ParseOrExit(const std::string& command, const std::string& summary,
                 const std::vector<FlagSpec>& specs, const std::vector<std::string>& args,
                 Flags* flags, int* exit_code) {
  auto parsed = Flags::Parse(command, summary, specs, args);
  if (parsed.ok()) {
    *flags = std::move(parsed).value();
    return true;
  }
  if (absl::IsNotFound(parsed.status())) {  // --help
    std::fputs(std::string(parsed.status().message()).c_str(), stdout);
    *exit_code = 0;
  } else {
    std::fprintf(stderr, "dserve %s: %s\n", command.c_str(),
                 std::string(parsed.status().message()).c_str());
    *exit_code = 2;
  }
  return false;
}

}  // namespace dserve::cli
