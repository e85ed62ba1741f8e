// The flags that configure the serving engine (KV cache budget and dtype, page size, batch
// limits, prefix caching), shared by `dserve bench` and the server command.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "cli/flags.h"
#include "cli/model_session.h"
#include "engine/engine_core.h"

namespace dserve::cli {

std::vector<FlagSpec> EngineFlags();
// bf16 | fp8 | f32, as --kv-cache-dtype spells them.
absl::StatusOr<DType> ParseKvCacheDType(const std::string& name);
// --speculative / --num-speculative-tokens as a list of draft counts (0: off); {0} without
// --speculative.
absl::StatusOr<std::vector<int>> ParseSpeculativeTokens(const Flags& flags);
absl::StatusOr<engine::EngineConfig> ParseEngineConfig(const Flags& flags,
                                                       const ModelSession& session);

}  // namespace dserve::cli
