// A plain double-precision reference implementation of the DeepSeek-V2/V3 forward pass
// (Hugging Face semantics), reading a Hugging Face checkpoint folder. Test support only.
//
// Deliberately independent of the project's own model/kernel code: it uses only the standard
// library and nlohmann json, and reads files with plain ifstreams. Weights stay in their
// checkpoint dtype (FP8 E4M3 + block scales, BF16, F16, F32) and are dequantised to double one
// row at a time; all activations and arithmetic are double. Errors: std::runtime_error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dserve::testing {

struct RefOutputs {
  int64_t T = 0, vocab = 0, hidden = 0;
  std::vector<int> logit_rows;          // rows whose logits were computed
  std::vector<double> logits;           // [logit_rows.size(), vocab]
  std::vector<double> hidden_postnorm;  // [T, hidden] after model.norm
  std::vector<double> mtp_logits;       // [T-1, vocab] when requested (row i: h[i] + token[i+1])
  // per main layer l (size num_hidden_layers), each [T * dim]:
  std::vector<std::vector<double>> layer_out, attn_out, ffn_out;  // dim hidden
  std::vector<std::vector<double>> kv_latent;  // dim kv_lora_rank (normalised c_kv)
  // dim qk_rope_head_dim, after RoPE, interleaved layout (as reference.npz's k_pe_rotated and
  // the original DeepSeek code): each pair (x[2i], x[2i+1]) of kv_a_proj's rope part is rotated
  // in place by angle p * inv_freq[i]. (HF's layout lists the 2i outputs, then the 2i+1 ones.)
  std::vector<std::vector<double>> k_pe;
  // [T * top_k] per layer, empty for dense layers; each token's experts in descending order of
  // the selection score (score + e_score_correction_bias), lowest expert id first on ties.
  // (reference.npz lists them in ascending expert id instead: compare as sets / after sorting.)
  std::vector<std::vector<int>> topk_idx;
  std::vector<std::vector<double>> topk_w;  // [T * top_k] final routing weights, same order
};

class ReferenceModel {
 public:
  explicit ReferenceModel(const std::string& checkpoint_dir);
  ~ReferenceModel();
  ReferenceModel(ReferenceModel&&) noexcept;
  ReferenceModel& operator=(ReferenceModel&&) noexcept;
  ReferenceModel(const ReferenceModel&) = delete;
  ReferenceModel& operator=(const ReferenceModel&) = delete;

  // True when the config declares a next-token-prediction (MTP) layer and its weights exist.
  bool has_mtp() const;
  int64_t vocab() const;

  // Full causal forward over `tokens` at positions 0..T-1. logit_rows empty = all rows.
  // with_mtp requires has_mtp().
  RefOutputs Forward(const std::vector<int>& tokens, const std::vector<int>& logit_rows = {},
                     bool with_mtp = false) const;

  // Greedy continuation: n new tokens (argmax, lowest index on ties), recomputing the full
  // forward each step. If mtp_drafts != nullptr and the model has MTP, (*mtp_drafts)[j] is the
  // MTP head's argmax at position prompt.size()-1+j fed with the token generated[j] (its draft
  // for generated[j+1]); otherwise *mtp_drafts is cleared.
  std::vector<int> Greedy(const std::vector<int>& prompt, int n,
                          std::vector<int>* mtp_drafts) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dserve::testing
