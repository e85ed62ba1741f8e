#include "cli/model_session.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::cli {

std::vector<FlagSpec> ModelFlags() {
  return {
      {"model", "checkpoint folder (Hugging Face layout)", "", false, true},
      {"device", "cpu (the CUDA backend is not built yet)", "cpu"},
      {"threads", "CPU threads (0: one per core)", "0"},
      {"mla-mode", "auto|naive|absorbed: which MLA form attention uses", "auto"},
  };
}

absl::StatusOr<ModelSession> OpenModel(const Flags& flags) {
  if (flags.Get("device") != "cpu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device ", flags.Get("device"), " is not available: this build has the cpu backend only"));
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
  s.ops = std::make_unique<kernels::cpu::CpuOps>(static_cast<int>(threads));
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
