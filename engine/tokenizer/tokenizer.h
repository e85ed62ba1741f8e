// Tokenizer: text <-> token ids exactly as a checkpoint defines them. LoadTokenizer picks the
// byte-level BPE of tokenizer.json (every DeepSeek release) or, failing that, the SentencePiece
// model of tokenizer.model; tokenizer_config.json decides BOS/EOS handling.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::engine {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ids of `text`. With add_special_tokens, BOS (and EOS) are added as tokenizer_config.json's
  // add_bos_token / add_eos_token say. Special-token strings inside the text always become
  // their ids. Errors: text that is not valid UTF-8. Thread-safe.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special_tokens) const = 0;
  // Text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD. Ids outside the
  // vocabulary are an error.
  virtual absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids,
                                             bool skip_special_tokens) const = 0;
  // The raw bytes one id contributes to a decode (empty for a skipped special token): the
  // streaming detokenizer concatenates these and decodes UTF-8 itself.
  virtual std::string_view TokenBytes(int32_t id) const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // SentencePiece drops the space its pieces carry at the very start of a decode; a streaming
  // decoder must do the same to the first bytes it emits.
  virtual bool strips_leading_space() const { return false; }

  virtual int32_t vocab_size() const = 0;
  // -1 when the tokenizer has none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
};

// Loads the tokenizer of a checkpoint folder.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

}  // namespace dserve::engine
