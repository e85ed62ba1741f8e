// SentencePieceTokenizer: checkpoints that ship tokenizer.model (a SentencePiece model, e.g.
// Llama-family distills) instead of tokenizer.json, through libsentencepiece.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/sentencepiece_backend.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_config.h"

namespace dserve::engine {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Create(
      const std::string& model_path, const TokenizerConfig& config);
  ~SentencePieceTokenizer() override;

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids,
                                     bool skip_special_tokens) const override;
  std::string_view TokenBytes(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;
  bool strips_leading_space() const override { return true; }
  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

 private:
  SentencePieceTokenizer();
  std::unique_ptr<SentencePieceBackend> sp_;
  std::vector<std::string> bytes_;  // each piece's text ("▁" as a space; byte pieces as bytes)
  bool add_bos_ = true, add_eos_ = false;
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace dserve::engine
