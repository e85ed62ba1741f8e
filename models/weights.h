// ModelWeights: every tensor of a DeepSeek-V2/V3 checkpoint bound to its role, shape-checked
// against the config. Projections stay in the checkpoint's mapping in their stored dtype;
// only norms (tiny) are converted to F32.
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "models/checkpoint.h"
#include "models/config.h"

namespace dserve::models {

using kernels::MlpWeights;
using kernels::Weight;

struct AttentionWeights {
  Weight q_a;         // [q_lora, hidden]            (q_lora_rank > 0)
  Tensor q_a_norm;    // [q_lora]
  Weight q_b;         // [heads * qk_head, q_lora]
  Weight q;           // [heads * qk_head, hidden]   (q_lora_rank == 0)
  Weight kv_a;        // [kv_lora + rope, hidden]    kv_a_proj_with_mqa
  Tensor kv_a_norm;   // [kv_lora]
  Weight kv_b;        // [heads * (nope + v), kv_lora]
  Weight o;           // [hidden, heads * v]
};

struct MoeWeights {
  Weight router;                  // [experts, hidden]   mlp.gate.weight
  Tensor bias;                    // [experts] F32, V3's e_score_correction_bias; empty in V2
  std::vector<MlpWeights> experts;
  std::optional<MlpWeights> shared;
};

struct BlockWeights {
  Tensor input_norm;
  Tensor post_attention_norm;
  AttentionWeights attn;
  bool is_moe = false;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

// The multi-token-prediction module, stored as layer num_hidden_layers.
struct MtpWeights {
  Weight embed;      // its own embed_tokens
  Tensor enorm;      // on the embedding of the next token
  Tensor hnorm;      // on the main model's hidden state
  Weight eh_proj;    // [hidden, 2 * hidden]
  BlockWeights block;
  Tensor head_norm;  // shared_head.norm
  Weight head;       // shared_head.head [vocab, hidden]
};

struct ModelWeights {
  Weight embed;  // [vocab, hidden]
  std::vector<BlockWeights> layers;
  Tensor final_norm;
  Weight lm_head;  // [vocab, hidden]
  std::optional<MtpWeights> mtp;
  // Bytes of the MTP layer's embedding/head found identical to the main ones and shared.
  int64_t mtp_bytes_shared = 0;
};

absl::StatusOr<ModelWeights> BindWeights(const ModelConfig& config, const Checkpoint& checkpoint);

}  // namespace dserve::models
