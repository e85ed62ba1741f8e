// BpeTokenizer: a Hugging Face tokenizer.json with a byte-level BPE model (DeepSeek-V2/V3/R1):
// added tokens split out first, then the pre-tokenizer's regexes, then BPE on each piece's
// bytes; decoding maps byte-level tokens back to bytes and repairs invalid UTF-8 with U+FFFD.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_config.h"

namespace dserve::engine {

class BpeTokenizer final : public Tokenizer {
 public:
  // tokenizer_json: the file's text; config from tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(const std::string& tokenizer_json,
                                                              const TokenizerConfig& config);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids,
                                     bool skip_special_tokens) const override;
  std::string_view TokenBytes(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

 private:
  BpeTokenizer() = default;
  void EncodeText(std::string_view text, std::vector<int32_t>* ids) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<AddedTokenMatcher> added_;
  std::vector<std::string> bytes_;  // raw bytes of every id (empty where no token exists)
  std::vector<bool> special_;
  std::vector<int32_t> prefix_, suffix_;  // added around the text with add_special_tokens
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace dserve::engine
