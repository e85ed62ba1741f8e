// `dserve bench --num-prompts N ...`: the offline serving benchmark. N requests of fixed
// prompt and output lengths run through the engine, `concurrency` in flight at once; prints
// throughput, TTFT and inter-token latency percentiles, KV pages and prefix-cache hit rate.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "cli/flags.h"
#include "cli/model_session.h"

namespace dserve::cli {

std::vector<FlagSpec> EngineBenchFlags();
absl::Status RunEngineBench(const Flags& flags, ModelSession& session);

}  // namespace dserve::cli
