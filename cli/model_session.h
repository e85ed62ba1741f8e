// ModelSession: what every model-running subcommand shares — the flags that choose the
// checkpoint, backend and threads, and the loaded model on its Ops.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/flags.h"
#include "cli/rank_group.h"
#include "kernels/cpu/cpu_ops.h"
#include "models/deepseek_model.h"

namespace dserve::cli {

// --model, --device, --threads, --mla-mode, and the parallel ones (rank_group.h).
std::vector<FlagSpec> ModelFlags();

struct ModelSession {
  ModelSession() = default;
  ModelSession(ModelSession&&) = default;
  ModelSession& operator=(ModelSession&&) = default;
  // A parallel model's leader tells its followers to stop; then they are joined.
  ~ModelSession();

  // This process's other ranks (--ep-size / --tp-size > 1); declared first, destroyed last.
  std::unique_ptr<RankGroup> ranks;
  std::unique_ptr<kernels::Ops> ops;  // the backend --device chose
  kernels::cpu::CpuOps* cpu = nullptr;  // ops, when it is the CPU backend
  int threads = 1;  // CPU threads: the CPU backend's, and the engine's samplers
  std::unique_ptr<models::DeepseekModel> model;
  kernels::MlaMode mla_mode = kernels::MlaMode::kAuto;
};

// On a node other than node 0 of a multi-node run the session has no model (this process
// only follows): the command calls FollowOnly.
absl::StatusOr<ModelSession> OpenModel(const Flags& flags);
// For a follower node: waits until node 0 stops the run; its followers' first error.
absl::Status FollowOnly(const std::string& command, ModelSession& session);

// Prints a status as "dserve <command>: <message>" and returns the exit code for it.
int ReportError(const std::string& command, const absl::Status& status);
// Parses flags; on --help prints usage and sets *exit_code = 0, on errors prints and sets 2.
bool ParseOrExit(const std::string& command, const std::string& summary,
                 const std::vector<FlagSpec>& specs, const std::vector<std::string>& args,
                 Flags* flags, int* exit_code);

}  // namespace dserve::cli
