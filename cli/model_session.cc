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
  return {
      {"model", "checkpoint folder (Hugging Face layout)", "", false, true},
      {"device",
#if DSERVE_HAS_CUDA
       "cpu|cuda: the backend (cuda: GPU 0; CUDA_VISIBLE_DEVICES picks it)",
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
