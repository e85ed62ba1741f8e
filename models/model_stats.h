// ModelStats: what `dserve inspect` prints — parameters in total and active per token,
// bytes by dtype, and MLA's latent-KV size against the MHA cache it replaces.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "models/checkpoint.h"
#include "models/config.h"

namespace dserve::models {

struct ModelStats {
  int64_t total_params = 0;        // main model (MTP layer excluded)
  int64_t active_params = 0;       // main model, per token: unchosen routed experts excluded
  int64_t mtp_params = 0;          // the MTP layer's own tensors
  int64_t mtp_active_params = 0;
  std::map<std::string, int64_t> bytes_by_dtype;  // every tensor, scales included
  int64_t kv_cache_bytes_per_token = 0;   // latent (kv_lora + rope) x layers, BF16
  int64_t mha_cache_bytes_per_token = 0;  // heads x (qk_head + v) x layers, BF16
};

ModelStats ComputeModelStats(const ModelConfig& config, const Checkpoint& checkpoint);
// The report `dserve inspect` prints.
std::string FormatModelStats(const ModelConfig& config, const ModelStats& stats);

}  // namespace dserve::models
