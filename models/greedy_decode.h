// GreedyDecode: one sequence, prefill then one forward step per new token over the paged
// latent cache, argmax sampling; optionally the MTP head's draft after every step. This is
// what `dserve generate` runs until the engine (engine/) schedules batches.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "models/deepseek_model.h"

namespace dserve::models {

struct GreedyOptions {
  int max_new_tokens = 16;
  bool stop_at_eos = true;  // stop after generating config.eos_token_id
  bool mtp_drafts = false;  // needs a model with an MTP layer
  kernels::MlaMode mla_mode = kernels::MlaMode::kAuto;
  int64_t page_size = 64;
};

struct GreedyResult {
  std::vector<int32_t> tokens;  // generated ids
  // drafts[j]: the MTP head's argmax for the token after tokens[j], given the hidden state
  // that produced tokens[j] and tokens[j] itself.
  std::vector<int32_t> drafts;
  std::vector<std::vector<float>> step_logits;  // when keep_logits: logits behind tokens[j]
  double prefill_seconds = 0;  // main-model prompt forward (MTP excluded)
  double decode_seconds = 0;   // main-model decode steps (MTP excluded)
  int64_t decode_steps = 0;
};

absl::StatusOr<GreedyResult> GreedyDecode(DeepseekModel& model, std::span<const int32_t> prompt,
                                          const GreedyOptions& options, bool keep_logits = false);

int32_t ArgMax(std::span<const float> values);

}  // namespace dserve::models
