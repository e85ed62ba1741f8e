// dserve inspect: parameters (total, active per token), bytes by dtype, and the latent-KV
// cache size against the MHA cache it replaces.
#include <cstdio>

#include "cli/commands.h"
#include "cli/model_session.h"
#include "models/checkpoint.h"
#include "models/model_stats.h"

namespace dserve::cli {

int RunInspect(const Args& args) {
  const std::vector<FlagSpec> specs = {
      {"model", "checkpoint folder (Hugging Face layout)", "", false, true}};
  Flags flags;
  int code;
  if (!ParseOrExit("inspect", "Describe a checkpoint: parameters, dtypes, KV-cache size.", specs,
                   args, &flags, &code)) {
    return code;
  }
  const std::string dir = flags.Get("model");
  auto config = models::LoadModelConfig(dir);
  if (!config.ok()) return ReportError("inspect", config.status());
  auto checkpoint = models::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return ReportError("inspect", checkpoint.status());
  const models::ModelStats stats = models::ComputeModelStats(*config, **checkpoint);
  std::fputs(models::FormatModelStats(*config, stats).c_str(), stdout);
  return 0;
}

}  // namespace dserve::cli
